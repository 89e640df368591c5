# The web service of docker-compose.yml: daphne serving HTTP and WebSockets.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them. The project is an
# application run from /app, so only pyproject's dependencies are installed
# (scripts/deps.py explains why not `pip install .`).
COPY pyproject.toml ./
COPY scripts/deps.py scripts/
RUN python scripts/deps.py > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
# Hashed, compressed copies for whitenoise (DEBUG off uses the manifest storage).
RUN DEBUG=false python manage.py collectstatic --noinput --verbosity 0

RUN useradd --system --uid 10001 --no-create-home telehealth
USER telehealth

EXPOSE 8000
CMD ["sh", "scripts/container-start"]
