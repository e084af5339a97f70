#!/bin/sh
# examples/deploy.sh — an EXAMPLE slipway deploy script for a production setup. Copy it and
# adapt it to your app.
#
# What it needs: pg_dump and a reachable PostgreSQL database (DATABASE_URL), and docker on a
# Docker Swarm manager where the service APP_SERVICE already exists. It cannot go green on a
# laptop. For a first pipeline that runs on this machine, start from the per-phase scripts
# `slipway init` writes (see docs/getting-started.md).
#
# slipway runs it for each environment (see slipway.example.toml):
#
#   [pipelines.environments.deploy]
#   type = "command"
#   command = ["./examples/deploy.sh"]
#   env = { APP_SERVICE = "shop-staging", BACKUP_DIR = "/var/backups/shop/staging" }
#   secrets = { DATABASE_URL = "/slipway/shop/staging/database-url" }
#
# What it gets from slipway (environment variables; there is no stdin and no terminal):
#   SLIPWAY_REPO      owner/name            SLIPWAY_ENV   the environment (staging, production)
#   SLIPWAY_SHA       the 40-hex commit     SLIPWAY_RUN   the run id (<pipeline>-<sha>)
#   SLIPWAY_ARTIFACT  what CI built (empty if CI sent none)
#   SLIPWAY_PHASE     the phase slipway runs it for (here always "release": see below)
#   plus `env` (plain) and `secrets` (DATABASE_URL here) from the configuration.
#   docs/deploy-scripts.md lists every variable.
#
# Its stdout and stderr are shown on the run (last 64 KiB, secret values replaced by ***).
# Exit 0 means deployed; anything else, or running past `timeout`, fails the stage. slipway
# never runs a deploy twice, so the script does not need to guard against that — but it must
# never wait for input.
#
# The order: back up, then migrate, then release. This script does all three in one program,
# given as `command` alone, so slipway sees a single phase (release). When the release or
# the smoke checks fail, slipway rolls the environment back by itself by running this script
# again for the previous release; it cannot restore the database backup, because it does not
# know about it. To have slipway restore it too, split the steps into the deploy's `backup`,
# `migrate`, `command` and `restore` programs (one script may serve them all by reading
# SLIPWAY_PHASE; a backup names what it made by printing SLIPWAY_BACKUP_REF=<reference>,
# which `restore` gets back): see docs/deploy-scripts.md and docs/safe-deployments.md.
#
# Replace the three commands marked ADAPT with your own.

set -eu

# --- inputs ---------------------------------------------------------------------------
: "${SLIPWAY_SHA:?run me from slipway (SLIPWAY_SHA is not set)}"
: "${SLIPWAY_ENV:?run me from slipway (SLIPWAY_ENV is not set)}"
: "${SLIPWAY_RUN:?run me from slipway (SLIPWAY_RUN is not set)}"
: "${DATABASE_URL:?add DATABASE_URL to deploy.secrets in slipway.toml}"
: "${APP_SERVICE:?add APP_SERVICE to deploy.env in slipway.toml}"
BACKUP_DIR=${BACKUP_DIR:-/var/backups/$APP_SERVICE}
SLIPWAY_ARTIFACT=${SLIPWAY_ARTIFACT:-}

if [ -z "$SLIPWAY_ARTIFACT" ]; then
  echo "error: CI reported no artifact for $SLIPWAY_SHA; send \"artifact\" in the CI result" >&2
  exit 1
fi

short=$(printf '%s' "$SLIPWAY_SHA" | cut -c1-12)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
echo "deploying ${SLIPWAY_REPO:-?} $short to $SLIPWAY_ENV ($SLIPWAY_RUN)"
echo "artifact: $SLIPWAY_ARTIFACT"

# Never print DATABASE_URL. slipway masks secret values in the captured output, but not
# elsewhere: prefer tools that read secrets from the environment over command-line
# arguments, which other users of the machine can see in `ps`.

# --- 1/3 backup -----------------------------------------------------------------------
echo "1/3 backup"
mkdir -p "$BACKUP_DIR"
backup="$BACKUP_DIR/$SLIPWAY_ENV-$stamp-$short.dump"
# ADAPT: your database's dump tool. `--no-password` makes pg_dump fail rather than prompt.
pg_dump --no-password --format=custom --file="$backup.partial" --dbname="$DATABASE_URL"
mv "$backup.partial" "$backup"
echo "    wrote $backup"

# --- 2/3 migrate ----------------------------------------------------------------------
echo "2/3 migrate"
# ADAPT: run the new version's migrations. `--env DATABASE_URL` (no value) passes the
# variable through from this environment without putting it on the command line.
docker run --rm --env DATABASE_URL "$SLIPWAY_ARTIFACT" migrate

# --- 3/3 release ----------------------------------------------------------------------
echo "3/3 release"
# ADAPT: switch traffic to the new version. This waits until the service has converged and
# fails if it does not, so a bad release fails the stage instead of passing silently.
docker service update --detach=false --image "$SLIPWAY_ARTIFACT" \
  --label-add "slipway.sha=$SLIPWAY_SHA" --label-add "slipway.run=$SLIPWAY_RUN" \
  "$APP_SERVICE"

echo "released $short to $SLIPWAY_ENV"
