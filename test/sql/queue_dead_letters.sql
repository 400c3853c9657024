-- Dead letters: after max_deliveries, on TTL expiry, and on overflow, a
-- message moves to the dead-letter queue with the reason in its headers
-- (moved by the queue worker).
SELECT svcbus.create_queue('dlq');
SELECT svcbus.create_queue('work', '{"visibility_timeout": 0.1, "max_deliveries": 2, "dead_letter_queue": "dlq"}');

-- Two deliveries, then it is dead.
SELECT svcbus.send('work', '{"poison": true}', headers => '{"k": "v"}');
SELECT id, deliveries FROM svcbus.receive('work');
SELECT svcbus.nack('work', 1, 0);
SELECT id, deliveries FROM svcbus.receive('work');
SELECT svcbus.nack('work', 1, 0);
SELECT id, body, headers - 'x-original-id' AS headers
  FROM svcbus.receive('dlq', 1, wait => 10);
SELECT svcbus.ack('dlq', 1::bigint);
SELECT count(*) AS gone_from_work FROM svcbus.receive('work', 10);

-- TTL: a message not received in time is dead-lettered instead.
SELECT svcbus.send('work', '{"stale": true}', ttl => 0.05);
SELECT pg_sleep(0.1);
SELECT count(*) AS expired_not_delivered FROM svcbus.receive('work', 10);
SELECT body, headers->>'x-dead-letter-reason' AS reason
  FROM svcbus.receive('dlq', 1, wait => 10);
SELECT svcbus.ack('dlq', 2::bigint);

-- Overflow dead_letter: the oldest message makes room.
SELECT svcbus.create_queue('bounded', '{"max_length": 2, "overflow": "dead_letter", "dead_letter_queue": "dlq"}');
SELECT svcbus.send('bounded', '{"n": 1}');
SELECT svcbus.send('bounded', '{"n": 2}');
SELECT svcbus.send('bounded', '{"n": 3}');
SELECT body FROM svcbus.receive('bounded', 10);
SELECT body, headers->>'x-dead-letter-reason' AS reason, headers->>'x-original-queue' AS origin
  FROM svcbus.receive('dlq', 1, wait => 10);

-- A dead-letter queue in use cannot be dropped.
SELECT svcbus.drop_queue('dlq');
\echo :LAST_ERROR_SQLSTATE

DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN (SELECT dead_lettered_total FROM svcbus.queue_stats WHERE name = 'work') = 2
          AND (SELECT dead_lettered_total FROM svcbus.queue_stats WHERE name = 'bounded') = 1;
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT name, dead_pending, dead_lettered_total FROM svcbus.queue_stats ORDER BY name;
SELECT svcbus.drop_queue('work');
SELECT svcbus.drop_queue('bounded');
SELECT svcbus.drop_queue('dlq');
