-- A NOTIFY inside the appending transaction takes a database-wide lock from pre-commit to
-- the end of commit, WAL flush included: every command's commit queued behind the last
-- one, and group commit was lost. The command side now sends one coalesced NOTIFY after
-- its commits instead (commands/src/store.rs); readers still poll as a fallback.
DROP TRIGGER events_notify ON event_store.events;
DROP FUNCTION event_store.notify_appended();
