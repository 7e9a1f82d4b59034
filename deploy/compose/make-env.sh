#!/bin/sh
# make-env.sh: print a compose .env with a fresh random password for every
# NATS user and for Grafana's admin, to use instead of the demo .env:
#
#   ./make-env.sh > .env.local && docker compose --env-file .env.local up -d
#
# Passwords are alphanumeric (nats-init writes them into passwords.conf,
# inside quotes). Changing them on a running stack: run `docker compose up -d`
# again; nats-init rewrites passwords.conf and the servers and services are
# recreated with the new values.
set -eu

pw() {
  # 24 characters of [A-Za-z0-9] from the kernel's random source.
  LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24
}

cat <<END
# Made by make-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). A secret file:
# keep it out of version control.
SYS_PASSWORD=$(pw)
SEARCH_PASSWORD=$(pw)
ANALYTICS_PASSWORD=$(pw)
GATEWAY_PASSWORD=$(pw)
DISPATCHER_PASSWORD=$(pw)
EXEC_US_EAST_PASSWORD=$(pw)
EXEC_EU_WEST_PASSWORD=$(pw)
OPERATOR_PASSWORD=$(pw)
GRAFANA_ADMIN_PASSWORD=$(pw)
SLUICE_IMAGE=${SLUICE_IMAGE:-sluice:dev}
NATS_IMAGE=${NATS_IMAGE:-nats:2.15.2-alpine}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v3.5.0}
GRAFANA_IMAGE=${GRAFANA_IMAGE:-grafana/grafana:12.1.0}
END
