// Reloads the page when a waiting room opens, so a disabled "Opens at 17:50" button
// turns into "Join" without a tap, and counts down to it on the join page. Configuration comes from the server in a
// json_script block (<script id="page-config" type="application/json">): the CSP
// allows no inline script.

const node = document.getElementById("page-config");
const config = node ? JSON.parse(node.textContent) : {};
const reloadAt = config.reloadAt ? Date.parse(config.reloadAt) : NaN;
const DAY = 24 * 3600 * 1000;

function reloadIfDue() {
  if (Date.now() >= reloadAt) {
    window.location.reload();
  }
}

function countdown() {
  const left = Math.max(0, Math.ceil((reloadAt - Date.now()) / 1000));
  const h = Math.floor(left / 3600);
  const m = Math.floor((left % 3600) / 60);
  const s = String(left % 60).padStart(2, "0");
  const text = h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  for (const node of document.querySelectorAll("[data-countdown]")) {
    node.hidden = false;
    node.querySelector("[data-countdown-value]").textContent = left > 0 ? text : "a moment";
  }
}

if (!Number.isNaN(reloadAt)) {
  if (reloadAt - Date.now() < DAY && document.querySelector("[data-countdown]")) {
    countdown();
    window.setInterval(countdown, 1000);
  }
  const wait = reloadAt - Date.now();
  // Timers stall while a phone sleeps or the tab is hidden: check again when it comes back.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") reloadIfDue();
  });
  if (wait > 0 && wait < DAY) {
    // A second late, so the server's clock agrees the room is open.
    window.setTimeout(reloadIfDue, wait + 1000);
  }
}
