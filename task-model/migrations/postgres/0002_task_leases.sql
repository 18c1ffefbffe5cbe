-- Leases move out of `tasks` into a narrow table of their own. Leasing a
-- task used to rewrite its whole row (about 1 KB, with new index entries
-- when the page had no room): every enqueue run churned the host's table.
-- Now a lease is one small row, written and deleted by portal-sync only;
-- the host's `tasks` rows change only when their content or status does.
--
-- No foreign key: a check per leased row cost a third of the lease time, and
-- a lease whose task the host deleted is harmless (it names no task, lapses,
-- and is removed when its job releases it).
CREATE TABLE IF NOT EXISTS task_leases (
    host_system_id TEXT COLLATE "C" PRIMARY KEY,
    job_id         TEXT NOT NULL,
    lease_until    BIGINT NOT NULL              -- milliseconds since the Unix epoch
);

INSERT INTO task_leases (host_system_id, job_id, lease_until)
SELECT host_system_id, lease_job, lease_until FROM tasks
WHERE lease_job IS NOT NULL AND lease_until IS NOT NULL
ON CONFLICT (host_system_id) DO NOTHING;

ALTER TABLE tasks DROP COLUMN IF EXISTS lease_job;
ALTER TABLE tasks DROP COLUMN IF EXISTS lease_until;
