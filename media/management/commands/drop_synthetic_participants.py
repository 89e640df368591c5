"""``manage.py drop_synthetic_participants --session <uuid> --count N``: synthetic people in a live session.

For a live demo or a capacity check: N synthetic participants (media/synthetic.py) join the
session through the running server, like browsers: they wait in the waiting room until a
therapist admits them (or the session admits by itself), then send a replayed VP8 clip and an
Opus tone to everyone and count what they receive. Prints a line per participant every few
seconds; ``--json`` prints the final counts as JSON. Stops after ``--seconds`` or on Ctrl-C.

The synthetic users stay in the database (``synthetic-...``, alias "Synthetic ...", no usable
password), enrolled in the session's track or on its roster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from media.seating import enlist_synthetic
from media.synthetic import SyntheticParticipant
from rooms.models import Session


class Command(BaseCommand):
    help = "Drop N synthetic participants (aiortc, real media) into a live session on a running server."

    def add_arguments(self, parser):
        parser.add_argument("--session", required=True, help="the session's UUID")
        parser.add_argument("--count", type=int, default=3, help="how many (1-50)")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running server (default: %(default)s)")
        parser.add_argument("--seconds", type=float, default=0, help="stop after this long (default: until Ctrl-C)")
        parser.add_argument(
            "--until-video",
            type=int,
            default=0,
            metavar="N",
            help="stop once each has decoded N video frames from every other one (--seconds still bounds the wait)",
        )
        parser.add_argument("--report-every", type=float, default=5.0)
        parser.add_argument("--json", action="store_true", help="print the final counts as JSON")

    def handle(self, *args, **options):
        try:
            logins = enlist_synthetic(options["session"], options["count"], now=timezone.now())
        except (Session.DoesNotExist, ValueError) as exc:  # ValueError: a malformed UUID or a bad count
            raise CommandError(f"cannot enlist synthetic participants: {exc}") from exc
        self.stderr.write(f"{len(logins)} synthetic participants: " + ", ".join(x.display_name for x in logins))
        with contextlib.suppress(KeyboardInterrupt):
            report = asyncio.run(self._run(logins, options))
        if options["json"]:
            self.stdout.write(json.dumps(report))

    async def _run(self, logins, options) -> dict:
        participants = [
            SyntheticParticipant(options["url"], options["session"], login.cookie, label=login.username)
            for login in logins
        ]
        report: dict = {}
        try:
            for participant in participants:
                welcome = await participant.start()
                self.stderr.write(f"{participant.label}: {welcome['state']}")
            started = time.monotonic()
            next_report = started + options["report_every"]
            while not options["seconds"] or time.monotonic() - started < options["seconds"]:
                await asyncio.sleep(0.2)
                if time.monotonic() >= next_report:
                    next_report += options["report_every"]
                    for p in participants:
                        self.stderr.write(f"{p.label} [{p.state}] frames from peers: {p.frames_from()}")
                if all(p.close_code is not None for p in participants):
                    break
                if options["until_video"] and all(
                    _video_from_each(p, participants) >= options["until_video"] for p in participants
                ):
                    break
        finally:
            # Every count first, then the goodbyes: one leaving removes its peer from the others'
            # view (and their counts of it) before they were read.
            for participant in participants:
                report[participant.label] = {
                    "member": participant.member_id,
                    "state": participant.state,
                    "frames": participant.frames_from(),
                    "close_code": participant.close_code,
                }
            for participant in participants:
                await participant.close()
        return report


def _video_from_each(participant, participants) -> int:
    """The fewest video frames ``participant`` has decoded from any of the others (0: one is missing)."""
    frames = participant.frames_from()
    others = [p.member_id for p in participants if p is not participant]
    return min((frames.get(member, {}).get("video", 0) for member in others), default=0)
