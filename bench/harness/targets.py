"""The pass-through targets: bare upstream, nginx, gateway flag off, gateway flag on."""

import os

from . import procs, setup

PASS_PATH = "/workspaces/ws-1"  # matches the DELETE route's path, never its method


class Target:
    """A thing wrk can hit. `server` is the proxy process (None for the bare upstream)."""

    def __init__(self, name, label, port, server=None):
        self.name, self.label, self.port, self.server = name, label, port, server

    def url(self, path=PASS_PATH):
        return f"http://127.0.0.1:{self.port}{path}"


def start_upstream(run_dir, bin_path, threads=2, port=None, name="upstream"):
    port = port or procs.free_port()
    srv = procs.Server(name, [bin_path, "--listen", f"127.0.0.1:{port}", "--threads", str(threads)],
                       port, os.path.join(run_dir, f"{name}.log"))
    return srv.start()


def nginx_server(run_dir, upstream_port, workers, name="nginx", wrap=()):
    port = procs.free_port()
    conf = setup.nginx_conf(run_dir, name, port, upstream_port, workers)
    prefix = os.path.dirname(conf)
    cmd = [*wrap, setup.nginx_bin(), "-p", prefix, "-c", conf]
    return procs.Server(name, cmd, port, os.path.join(run_dir, f"{name}.log"))


def gateway_env(flag_on, secret):
    # The access log is off, as nginx's is (`access_log off`): both are measured as proxies.
    env = {"GATEWAY_JWT_SECRET": secret,
           "MOLECULE_PLATFORM_APPROVAL_GATE": "1" if flag_on else "0",
           "RUST_LOG": "info,access=off"}
    return env


def gateway_server(run_dir, gw_bin, upstream_port, flag_on, secret, store_url=None,
                   name=None, wrap=()):
    name = name or ("gateway-on" if flag_on else "gateway-off")
    port, admin = procs.free_port(), procs.free_port()
    store_url = store_url or f"sqlite://{os.path.join(run_dir, name)}/approvals.db"
    conf = setup.gateway_conf(run_dir, name, port, admin, upstream_port, store_url)
    srv = procs.Server(name, [*wrap, gw_bin, "serve", "--config", conf], port,
                       os.path.join(run_dir, f"{name}.log"), env=gateway_env(flag_on, secret))
    srv.admin_port = admin
    srv.config = conf
    return srv


LABELS = {
    "direct": "bare upstream (hyper, 2 threads)",
    "nginx": "nginx, 2 workers, upstream keepalive",
    "gw_off": "gateway, flag off",
    "gw_on": "gateway, flag on, route not matched",
}
