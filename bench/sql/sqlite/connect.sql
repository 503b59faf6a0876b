-- Per connection, as the store opens it (src/store/sqlite/mod.rs: WAL, synchronous NORMAL,
-- busy timeout, foreign keys). WAL is persistent in the file; the rest is per connection.
-- Not copied: the store checkpoints the WAL on a second connection in the background
-- (src/store/sqlite/checkpoint.rs) and inline only past 10,000 frames; this loop keeps SQLite's
-- default, an inline checkpoint every 1,000 frames, i.e. the database as it comes.
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON
