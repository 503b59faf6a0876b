-- Per connection, as the store opens it (src/store/sqlite.rs: WAL, synchronous NORMAL,
-- busy timeout, foreign keys). WAL is persistent in the file; the rest is per connection.
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON
