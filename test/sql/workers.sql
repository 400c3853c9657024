-- The launcher starts the queue worker, which connects to
-- svcbus.database (contrib_regression here) and reports what it does.
DO $$
BEGIN
  FOR i IN 1..400 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM svcbus.workers
                       WHERE name = 'queue' AND state = 'running'
                         AND detail LIKE 'serving%')
          AND NOT EXISTS (SELECT 1 FROM svcbus.workers
                           WHERE state <> 'running' OR detail IN ('connecting', 'starting'));
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;

SELECT name, state, detail, pid > 0 AS has_pid,
       started_at <= now() AS started_in_past,
       last_activity_at >= started_at AS active
  FROM svcbus.workers ORDER BY name;

-- The queue worker is a real backend of this database.
SELECT count(*) AS queue_backends
  FROM pg_stat_activity a JOIN svcbus.workers w ON a.pid = w.pid
 WHERE w.name = 'queue' AND a.datname = current_database()
   AND a.backend_type = 'svcbus queue';

-- The view has the documented columns.
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute WHERE attrelid = 'svcbus.workers'::regclass AND attnum > 0
 ORDER BY attnum;
