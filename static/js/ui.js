// Small DOM helpers shared by the room screens. Everything a person or the server wrote goes in
// with textContent, never as markup.

export const $ = (id) => document.getElementById(id);

export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

/** Say something through the polite live region (joins, admissions, chat). */
export function announce(text) {
  const node = $("announcer");
  node.textContent = "";
  // Fresh text after a tick, so screen readers announce a repeat too.
  window.setTimeout(() => {
    node.textContent = text;
  }, 50);
}

/** 24-hour clock, like the times the server renders on the page. */
export function clock(when) {
  return new Date(when).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

/** 4:05, or 1:02:05 past an hour. */
export function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** "under a minute", "1 minute", "12 minutes". */
export function minutes(ms) {
  const m = Math.floor(Math.max(0, ms) / 60000);
  if (m < 1) return "under a minute";
  return m === 1 ? "1 minute" : `${m} minutes`;
}

/** A yes/no question in the page's <dialog>; resolves true for Confirm. */
export function confirmAction(text, confirmLabel = "Confirm") {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = confirmLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

/**
 * Re-render a list without losing the keyboard user's place: the focused control and open
 * <details> are found again by their data-key after the rows are replaced.
 */
export function replaceKeepingFocus(list, rows) {
  const active = document.activeElement;
  const focusKey = active && list.contains(active) ? active.dataset.key : null;
  const open = new Set([...list.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  list.replaceChildren(...rows);
  for (const details of list.querySelectorAll("details")) if (open.has(details.dataset.key)) details.open = true;
  if (focusKey) {
    // The same control, else another control of the same row ("member:action" keys), else the list.
    const row = focusKey.split(":")[0];
    const again =
      list.querySelector(`[data-key="${CSS.escape(focusKey)}"]`) || list.querySelector(`[data-key^="${CSS.escape(row)}:"]`);
    if (again) again.focus();
    else {
      list.setAttribute("tabindex", "-1");
      list.focus();
    }
  }
}
