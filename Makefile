# The few commands a person runs. Each installs what it needs first (scripts/lib.sh).
# Extra pytest arguments: make test ARGS="-x -k join"

.PHONY: demo test test-fast lint format check ci bench bench-media

demo:         ## install, migrate, seed and serve the demo on http://127.0.0.1:8000
	bash scripts/demo

test:         ## the whole suite, browser tests included
	bash scripts/test $(ARGS)

test-fast:    ## everything but the browser and media tests
	bash scripts/test -m "not e2e and not media" $(ARGS)

lint:         ## ruff: lint rules and formatting
	bash scripts/setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format:       ## apply ruff's fixes and formatting
	bash scripts/setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

check:        ## Django system checks and no missing migrations
	bash scripts/setup
	.venv/bin/python manage.py check
	.venv/bin/python manage.py makemigrations --check --dry-run

ci:           ## what CI runs: PostgreSQL + Redis, then SQLite + in-memory
	bash .ci/run

bench:        ## benchmarks against a bare relay; rewrites docs/performance.md (PostgreSQL + Redis on 127.0.0.1)
	bash scripts/setup
	bash -c 'source scripts/lib.sh && ensure_nginx'
	.venv/bin/python scripts/deps.py bench > .venv/.requirements-bench.txt
	.venv/bin/python -m pip install --quiet -r .venv/.requirements-bench.txt
	.venv/bin/python -m bench.run --all $(ARGS)

bench-media:  ## media benchmark: its own Janus + daphne, rooms of 4/8/12; rewrites its section of docs/performance.md
	bash scripts/setup
	@command -v janus >/dev/null || { echo "janus is not installed (apt-get install -y janus)"; exit 1; }
	.venv/bin/python -m bench.media $(ARGS)
