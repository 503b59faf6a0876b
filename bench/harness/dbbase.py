"""The database's own limit: the gate's SQL without the gateway (pgbench; a sqlite3 loop).

Scripts live in bench/sql/{postgres,sqlite}/ (format: bench/sql/README.md). The schema comes from
the gateway's own migrations (`approval-gateway migrate` on a fresh database), so the statements
run against exactly the tables and indexes the gateway uses."""

import glob
import os
import sqlite3
import statistics
import subprocess
import threading
import time

from . import setup
from .setup import log

SQL_DIR = os.path.join(setup.BENCH, "sql")
PATHS = ("first", "dedup", "consume")


def _psql(url, *args):
    return subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, *args],
                          capture_output=True, text=True, timeout=600, check=True).stdout


def create_db(base_url, tag):
    name = f"bench_{tag}_{os.getpid()}_{int(time.time())}"
    _psql(f"{base_url}/postgres", "-c", f'CREATE DATABASE "{name}"')
    return name


def drop_db(base_url, name):
    try:
        _psql(f"{base_url}/postgres", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except subprocess.CalledProcessError as e:
        log(f"could not drop {name}: {e.stderr[:200]}")


def _pcts(lat_us):
    if not lat_us:
        return None, None
    lat_us.sort()
    return (lat_us[len(lat_us) // 2] / 1000, lat_us[min(len(lat_us) - 1,
                                                         int(len(lat_us) * 0.99))] / 1000)


def _script(store, path, suffix=".sql"):
    p = os.path.join(SQL_DIR, store, path + suffix)
    return p if os.path.exists(p) else None


def _subst(text, values):
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    return text


class Baselines:
    def __init__(self, ctx, notes):
        self.ctx, self.notes = ctx, notes
        self.pg_db = self.sqlite_path = None
        have_pg = any(_script("postgres", p) for p in PATHS)
        have_sq = any(_script("sqlite", p) for p in PATHS)
        if not (have_pg or have_sq):
            notes.append("database baselines not run: no scripts in bench/sql/ yet")
            return
        if have_pg:
            self.pg_db = create_db(ctx.pg_url, "pgb")
            self._migrate(f"{ctx.pg_url}/{self.pg_db}", "migrate-pg")
            self.pg_url = f"{ctx.pg_url}/{self.pg_db}"
        if have_sq:
            self.sqlite_path = os.path.join(ctx.run_dir, "baseline-sqlite.db")
            self._migrate(f"sqlite://{self.sqlite_path}", "migrate-sqlite")

    def _migrate(self, url, name):
        conf = setup.gateway_conf(self.ctx.run_dir, name, 1, 2, 3, url)
        subprocess.run([self.ctx.gw_bin, "migrate", "--config", conf], check=True, timeout=120,
                       capture_output=True)

    def run(self, store, rep, conns):
        out = []
        for path in PATHS:
            if store == "postgres" and self.pg_db and _script("postgres", path):
                r = self._pgbench(path, conns, rep)
            elif store == "sqlite" and self.sqlite_path and _script("sqlite", path):
                r = self._sqlite_loop(path, conns, rep)
            else:
                continue
            r.update({"kind": "db", "store": store, "path": path, "conns": conns, "rep": rep})
            log(f"db {store} {path} rep {rep} c={conns}: {r['rps']:.0f} ops/s "
                f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms ({r['what']})")
            out.append(r)
        return out

    def _values(self, path, conns, rep):
        return {"RUN": f"{path}{rep}c{conns}{int(time.time()) % 100000}", "CLIENTS": conns,
                "ROWS": self.ctx.seed_rows}

    def _pgbench(self, path, conns, rep):
        vals = self._values(path, conns, rep)
        seed = _script("postgres", path, ".seed.sql")
        if seed:
            with open(seed) as f:
                _psql(self.pg_url, "-c", _subst(f.read(), vals))
        logdir = os.path.join(self.ctx.run_dir, f"pgbench-{vals['RUN']}")
        os.makedirs(logdir)
        d = self.ctx.gated_duration
        cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(conns), "-j", str(min(conns, 2)),
               "-T", str(d), "-l", "--log-prefix", os.path.join(logdir, "tx"),
               "-D", f"run={vals['RUN']}", "-D", "i=0", "-f", _script("postgres", path), self.pg_url]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=d + 120, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"pgbench {path} failed: {res.stderr[-400:]}")
        lat, n = [], 0
        for fn in glob.glob(os.path.join(logdir, "tx*")):
            with open(fn) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 3:
                        lat.append(int(parts[2]))
                        n += 1
        p50, p99 = _pcts(lat)
        return {"rps": n / d, "p50_ms": p50, "p99_ms": p99, "what": "pgbench -M prepared"}

    def _sqlite_loop(self, path, conns, rep):
        """`conns` threads, each its own connection, running the path's statements in a loop."""
        vals = self._values(path, conns, rep)
        seed = _script("sqlite", path, ".seed.sql")
        if seed:
            with open(seed) as f, sqlite3.connect(self.sqlite_path) as db:
                db.executescript(_subst(f.read(), vals))
        with open(_script("sqlite", path)) as f:
            stmts = [s.strip() for s in _subst(f.read(), vals).split(";\n") if s.strip()]
        d = self.ctx.gated_duration
        lat, lock = [], threading.Lock()
        stop = time.monotonic() + d

        def worker(client):
            db = sqlite3.connect(self.sqlite_path, isolation_level=None, timeout=30)
            db.execute("PRAGMA busy_timeout = 30000")
            mine, n = [], 0
            while time.monotonic() < stop:
                n += 1
                params = {"client": client, "n": n}
                t = time.perf_counter()
                for s in stmts:
                    db.execute(s, {k: v for k, v in params.items() if f":{k}" in s}).fetchall()
                mine.append(int((time.perf_counter() - t) * 1e6))
            db.close()
            with lock:
                lat.extend(mine)

        ts = [threading.Thread(target=worker, args=(c,)) for c in range(conns)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        p50, p99 = _pcts(lat)
        return {"rps": len(lat) / d, "p50_ms": p50, "p99_ms": p99,
                "what": f"python sqlite3 loop, {conns} connection(s)",
                "median_us": statistics.median(lat) if lat else None}

    def close(self):
        if self.pg_db:
            drop_db(self.ctx.pg_url, self.pg_db)
