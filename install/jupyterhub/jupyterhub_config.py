"""JupyterHub configuration for a class metered by carbon-kernel (one machine, local processes).

What it sets up:

* every student's single-user server gets ``CARBON_METRICS_ADDR`` (each kernel serves Prometheus
  ``/metrics`` on a free loopback port), ``CARBON_METRICS_SD_DIR`` (each kernel writes a Prometheus
  ``file_sd`` target there, removed when it stops) and ``CARBON_COURSE`` (a label on every
  metric); ``JUPYTERHUB_USER`` is set by the hub and becomes the ``user`` label;
* Prometheus scrapes ``$CARBON_METRICS_SD_DIR/*.json`` with ``file_sd_configs`` (see
  ``install/jupyterhub/promql.md`` for the scrape config and the queries);
* an optional service with an API token (``CARBON_HUB_SERVICE_TOKEN``) that may start users'
  servers and use them (the class test does, a teacher's script can).

On Kubernetes (Zero to JupyterHub) this file is not used: ``helm-values.yaml`` sets the same
variables with a fixed port and Prometheus' pod annotations instead of file_sd.

Every setting comes from an environment variable, so the same file serves a teacher's machine and
the test (tests/python/test_jupyterhub.py), which points it at loopback ports and a temp folder:

=============================  ==================================================  ==================
variable                       meaning                                             default
=============================  ==================================================  ==================
CARBON_HUB_DATA_DIR            hub database, cookie secret, pid file               current folder
CARBON_HUB_IP                  address of the public proxy                         all interfaces
CARBON_HUB_PORT                port of the public proxy                            8000
CARBON_HUB_API_PORT            the hub's own port (proxy → hub)                    8081
CARBON_HUB_PROXY_API_PORT      configurable-http-proxy's API port                  8001
CARBON_HUB_PROXY_CMD           configurable-http-proxy command                     on PATH
CARBON_HUB_AUTHENTICATOR       ``pam`` or ``dummy`` (tests and demos only)         pam
CARBON_HUB_SPAWNER             ``local`` (system users) or ``simple`` (one user)   local
CARBON_HUB_HOMES               home folders for ``simple`` (``{username}``)        DATA_DIR/homes/…
CARBON_HUB_ADMINS              comma-separated admin users                         none
CARBON_HUB_SERVICE_TOKEN       API token of the ``carbon-class`` service            no service
CARBON_HUB_SPAWN_TIMEOUT       seconds a server may take to start                  120
CARBON_METRICS_ADDR            passed to kernels                                   127.0.0.1:0
CARBON_METRICS_SD_DIR          passed to kernels (Prometheus reads it)             DATA_DIR/prometheus-targets
CARBON_COURSE                  passed to kernels                                   unset
=============================  ==================================================  ==================
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821  (JupyterHub provides it)


def env(name, default=None):
    value = os.environ.get(name, "").strip()
    return value if value else default


data_dir = Path(env("CARBON_HUB_DATA_DIR", os.getcwd())).resolve()
data_dir.mkdir(parents=True, exist_ok=True)

# --- network ---
c.JupyterHub.ip = env("CARBON_HUB_IP", "")
c.JupyterHub.port = int(env("CARBON_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("CARBON_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:%d" % int(env("CARBON_HUB_PROXY_API_PORT", "8001"))
if env("CARBON_HUB_PROXY_CMD"):
    c.ConfigurableHTTPProxy.command = [env("CARBON_HUB_PROXY_CMD")]
# A hub restart (an upgrade, a config change) leaves the students' servers and kernels running:
# their work, their emissions.csv rows and their metrics go on; the new hub finds them again.
# The proxy it started is stopped with it and restarted with the routes of running servers.
c.JupyterHub.cleanup_proxy = True
c.JupyterHub.cleanup_servers = False

# --- state ---
c.JupyterHub.db_url = "sqlite:///" + str(data_dir / "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(data_dir / "jupyterhub.pid")

# --- who logs in ---
authenticator = env("CARBON_HUB_AUTHENTICATOR", "pam")
if authenticator == "dummy":
    # Any name, any password (or the shared one in DummyAuthenticator.password): tests, demos.
    c.JupyterHub.authenticator_class = "dummy"
    c.Authenticator.allow_all = True
else:
    c.JupyterHub.authenticator_class = authenticator
admins = [a.strip() for a in env("CARBON_HUB_ADMINS", "").split(",") if a.strip()]
if admins:
    c.Authenticator.admin_users = set(admins)

# --- how servers run ---
spawner = env("CARBON_HUB_SPAWNER", "local")
if spawner == "simple":
    # Every server runs as the hub's own user, in its own home folder: no system accounts needed.
    c.JupyterHub.spawner_class = "simple"
    c.SimpleLocalProcessSpawner.home_dir_template = env(
        "CARBON_HUB_HOMES", str(data_dir / "homes" / "{username}")
    )
    if os.geteuid() == 0:
        # A hub run by root (a CI machine, a container) spawns root-owned servers here, which
        # Jupyter Server refuses without this.
        c.Spawner.args = ["--ServerApp.allow_root=True"]
else:
    c.JupyterHub.spawner_class = "localprocess"
timeout = int(env("CARBON_HUB_SPAWN_TIMEOUT", "120"))
c.Spawner.start_timeout = timeout
c.Spawner.http_timeout = timeout
# The single-user server of the hub's own environment (where install/setup.sh put the
# carbon kernelspecs with `carbon-kernel install --sys-prefix`).
c.Spawner.default_url = "/lab"

# --- carbon-kernel metrics: every kernel of every student ---
sd_dir = Path(env("CARBON_METRICS_SD_DIR", str(data_dir / "prometheus-targets")))
sd_dir.mkdir(parents=True, exist_ok=True)
# Kernels of every student write their targets here: with system users (the default spawner)
# the folder is shared, like /tmp (sticky: a student cannot remove another's file).
try:
    sd_dir.chmod(0o1777)
except OSError:
    pass
carbon_env = {
    "CARBON_METRICS_ADDR": env("CARBON_METRICS_ADDR", "127.0.0.1:0"),
    "CARBON_METRICS_SD_DIR": str(sd_dir),
}
if env("CARBON_COURSE"):
    carbon_env["CARBON_COURSE"] = env("CARBON_COURSE")
c.Spawner.environment = carbon_env

# --- a service token for scripts (and the class test) ---
token = env("CARBON_HUB_SERVICE_TOKEN")
if token:
    c.JupyterHub.services = [{"name": "carbon-class", "api_token": token}]
    c.JupyterHub.load_roles = [
        {
            "name": "carbon-class",
            "description": "start students' servers and use them (kernels), read users",
            "scopes": ["admin:users", "admin:servers", "access:servers", "list:users", "read:users"],
            "services": ["carbon-class"],
        }
    ]
