"""``manage.py janusconf OUTDIR``: write a safe Janus config folder (media/janusconf.py)."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from media import janusconf
from telehealth.env import ImproperlyConfiguredEnv


class Command(BaseCommand):
    help = "Write a safe Janus config folder (secrets from JANUS_API_SECRET / JANUS_ADMIN_KEY or their _FILE forms)."

    def add_arguments(self, parser):
        janusconf.build_parser(parser)

    def handle(self, *args, **options):
        import argparse

        namespace = argparse.Namespace(**options)
        try:
            path = janusconf.write(janusconf.conf_from_args(namespace, dict(os.environ)), options["outdir"])
        except (ValueError, ImproperlyConfiguredEnv) as exc:
            raise CommandError(f"{exc} (secrets come from JANUS_API_SECRET and JANUS_ADMIN_KEY)") from exc
        self.stdout.write(f"wrote {path.parent}: run janus -C {path} -F {path.parent}")
