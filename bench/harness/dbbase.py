"""The database's own limit: the gate's SQL without the gateway (pgbench; a sqlite3 loop).

Scripts live in bench/sql/{postgres,sqlite}/ (format: bench/sql/README.md). The schema comes from
the repo's migrations/ (what the gateway migrates to), so the statements run against exactly the
tables and indexes the gateway uses."""

import glob
import math
import os
import re
import sqlite3
import subprocess
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
    """p50, p99 in ms: nearest rank, as bench/wrk/gated.lua computes the gateway's."""
    if not lat_us:
        return None, None
    lat_us.sort()

    def rank(p):
        return lat_us[max(0, math.ceil(len(lat_us) * p / 100) - 1)] / 1000
    return rank(50), rank(99)


def _script(store, path, suffix=".sql"):
    p = os.path.join(SQL_DIR, store, path + suffix)
    return p if os.path.exists(p) else None


def _statements(path, values=None):
    """[(capture name or None, sql)] from a file of statements separated by ';' + newline.
    A `-- capture: NAME` line binds the first column of the statement's first row to :NAME."""
    with open(path) as f:
        text = _subst(f.read(), values or {})
    out = []
    for chunk in text.split(";\n"):
        capture = None
        for line in chunk.splitlines():
            if line.strip().startswith("-- capture:"):
                capture = line.split(":", 1)[1].strip()
        if any(ln.strip() and not ln.strip().startswith("--") for ln in chunk.splitlines()):
            out.append((capture, chunk.strip().rstrip(";")))
    return out


def _expand_gate(text):
    """`@GATE(<identity expression>)@` -> the gate statement of postgres/gate.part.sql for it, so
    the three pgbench scripts share one copy of the statement the store sends."""
    with open(os.path.join(SQL_DIR, "postgres", "gate.part.sql")) as f:
        part = "\n".join(ln for ln in f.read().splitlines() if not ln.startswith("--")).strip()
    return re.sub(r"@GATE\((.*?)\)@", lambda m: part.replace("@ID@", m.group(1)), text, flags=re.S)


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
        """Apply the repo's migrations/ files in order: the very schema the gateway migrates to
        (without sqlx's bookkeeping table, which the statements never touch)."""
        kind = "postgres" if url.startswith("postgres") else "sqlite"
        files = sorted(glob.glob(os.path.join(setup.REPO, "migrations", kind, "*.sql")))
        if not files:
            raise RuntimeError(f"no migrations in migrations/{kind}/")
        for fn in files:
            if kind == "postgres":
                _psql(url, "-f", fn)
            else:
                with open(fn) as f, sqlite3.connect(url[len("sqlite://"):]) as db:
                    db.executescript(f.read())
        log(f"{name}: schema from {len(files)} migration file(s)")

    def run(self, store, rep, conns):
        out = []
        for path in PATHS:
            try:
                if store == "postgres" and self.pg_db and _script("postgres", path):
                    r = self._pgbench(path, conns, rep)
                elif store == "sqlite" and self.sqlite_path and _script("sqlite", path):
                    r = self._sqlite_loop(path, conns, rep)
                else:
                    continue
            except (RuntimeError, OSError, sqlite3.Error, subprocess.SubprocessError) as e:
                msg = f"database baseline {store} {path} c={conns} failed: {str(e)[:300]}"
                log(msg)
                if msg not in self.notes:
                    self.notes.append(msg)
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
        script = os.path.join(logdir, path + ".sql")
        with open(_script("postgres", path)) as src, open(script, "w") as dst:
            dst.write(_expand_gate(src.read()))
        d = self.ctx.gated_duration
        cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(conns), "-j", str(min(conns, 2)),
               "-T", str(d), "-l", "--log-prefix", os.path.join(logdir, "tx"),
               "-D", f"run={vals['RUN']}", "-D", "i=0", "-f", script, self.pg_url]
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
        """One connection, like the store (its pool has one connection whatever the load), running
        the path's statements in a loop for the run's duration; `conns` only labels the row."""
        vals = self._values(path, conns, rep)
        db = sqlite3.connect(self.sqlite_path, isolation_level=None, timeout=30)
        for s in _statements(_script("sqlite", "connect")):
            db.execute(s[1]).fetchall()
        seed = _script("sqlite", path, ".seed.sql")
        if seed:
            with open(seed) as f:
                db.executescript(_subst(f.read(), vals))
        stmts = _statements(_script("sqlite", path), vals)
        lat, n, exhausted = [], 0, False
        t_start = time.monotonic()
        stop = t_start + self.ctx.gated_duration
        while time.monotonic() < stop and not exhausted:
            n += 1
            params = {"n": n, "client": 0, "now": int(time.time() * 1e6)}
            t = time.perf_counter()
            for capture, s in stmts:
                rows = db.execute(s, {k: v for k, v in params.items() if f":{k}" in s}).fetchall()
                if capture:
                    params[capture] = rows[0][0] if rows else None
                    if params[capture] is None:
                        exhausted = True
                        db.execute("ROLLBACK")
                        break
            else:
                lat.append(int((time.perf_counter() - t) * 1e6))
        elapsed = time.monotonic() - t_start
        db.close()
        p50, p99 = _pcts(lat)
        return {"rps": len(lat) / elapsed, "p50_ms": p50, "p99_ms": p99,
                "what": "python sqlite3 loop, 1 connection (as the store)",
                "exhausted": exhausted}

    def close(self):
        if self.pg_db:
            drop_db(self.ctx.pg_url, self.pg_db)
