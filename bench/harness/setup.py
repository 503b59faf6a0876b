"""Tools, builds and per-run configs: everything the harness needs before it measures."""

import os
import shutil
import subprocess

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
UPSTREAM_BIN = os.path.join(BENCH, "target", "release", "bench-upstream")

APT_TOOLS = {"wrk": "wrk", "nginx": "nginx", "valgrind": "valgrind", "perf": "linux-perf",
             "pgbench": "postgresql-client", "sqlite3": "sqlite3"}


def log(msg):
    print(f"[bench] {msg}", flush=True)


def ensure_tools(need):
    """apt-get install whatever of `need` is missing (we run as root on these machines)."""
    missing = [t for t in need if shutil.which(t) is None
               and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        pkgs = sorted({APT_TOOLS[t] for t in missing})
        log(f"installing {' '.join(pkgs)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *pkgs], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    for mod, pkg in (("matplotlib", "matplotlib"), ("jwt", "pyjwt")):
        try:
            __import__(mod)
        except ImportError:
            log(f"pip install {pkg}")
            subprocess.run(["python3", "-m", "pip", "install", "-q", pkg], check=True)


def nginx_bin():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def cargo(args, cwd):
    """Builds run at low priority: the machine is shared with other engineers' builds."""
    subprocess.run(["nice", "-n", "10", "cargo", *args], cwd=cwd, check=True)


def build_upstream():
    cargo(["build", "--release", "--manifest-path", os.path.join(BENCH, "upstream", "Cargo.toml"),
           "--target-dir", os.path.join(BENCH, "target")], cwd=BENCH)
    return UPSTREAM_BIN


def build_gateway():
    cargo(["build", "--profile", "dist", "--bin", "approval-gateway"], cwd=REPO)
    return os.path.join(REPO, "target", "dist", "approval-gateway")


def render(template, values, dest):
    with open(os.path.join(BENCH, "config", template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    with open(dest, "w") as f:
        f.write(text)
    return dest


def nginx_conf(run_dir, name, port, upstream_port, workers):
    """workers=0: single process in the foreground (for callgrind); else master + N workers."""
    d = os.path.join(run_dir, name)
    os.makedirs(d, exist_ok=True)
    model = ("daemon off;\nmaster_process off;\nworker_processes 1;" if workers == 0
             else f"daemon off;\nworker_processes {workers};")
    return render("nginx.conf.in", {"PROCESS_MODEL": model, "DIR": d, "PORT": port,
                                    "UPSTREAM_PORT": upstream_port},
                  os.path.join(d, "nginx.conf"))


def gateway_conf(run_dir, name, port, admin_port, upstream_port, store_url):
    d = os.path.join(run_dir, name)
    os.makedirs(d, exist_ok=True)
    return render("gateway.toml.in", {"PORT": port, "ADMIN_PORT": admin_port,
                                      "UPSTREAM_PORT": upstream_port, "STORE_URL": store_url},
                  os.path.join(d, "gateway.toml"))
