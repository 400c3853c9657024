-- Queues: create, send, receive with a lease, ack, nack, extend, delay,
-- priority, batches, opaque bodies, dedup, purge, drop, stats.
SELECT svcbus.create_queue('orders');
SELECT svcbus.create_queue('jobs', '{"visibility_timeout": 0.3, "max_deliveries": 3}');
SELECT name, visibility_timeout, max_deliveries, dead_letter_queue, overflow, privileges
  FROM svcbus.list_queues();

-- Send returns increasing ids; nothing is visible before commit.
BEGIN;
SELECT svcbus.send('orders', '{"n": 1}');
SELECT svcbus.send('orders', '{"n": 2}', headers => '{"type": "created"}');
SELECT count(*) AS visible_before_commit FROM svcbus.receive('orders', 10);
COMMIT;

-- FIFO within a priority; the lease hides what was received.
SELECT id, body, headers, deliveries FROM svcbus.receive('orders', 1);
SELECT id, body, headers, deliveries FROM svcbus.receive('orders', 10);
SELECT count(*) AS nothing_left FROM svcbus.receive('orders', 10);
SELECT visible, in_flight, sent_total, received_total FROM svcbus.queue_stats WHERE name = 'orders';

-- Ack settles at commit; acking twice, or an id never received, is an error.
SELECT svcbus.ack('orders', ARRAY[1, 2]::bigint[]);
SELECT svcbus.ack('orders', 1::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.ack('orders', 999::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT visible, in_flight, acked_total FROM svcbus.queue_stats WHERE name = 'orders';

-- An ack rolled back leaves the message in flight; the redelivery comes
-- after the lease ends.
SELECT svcbus.send('jobs', '{"job": "a"}');
SELECT id, deliveries FROM svcbus.receive('jobs');
BEGIN;
SELECT svcbus.ack('jobs', 1::bigint);
ROLLBACK;
SELECT pg_sleep(0.35);
SELECT id, deliveries FROM svcbus.receive('jobs');

-- Extend keeps the lease; nack with a delay gives it back at commit.
SELECT svcbus.extend('jobs', 1, 60) > now() AS extended;
SELECT pg_sleep(0.35);
SELECT count(*) AS still_leased FROM svcbus.receive('jobs');
SELECT svcbus.nack('jobs', 1, 0);
SELECT id, deliveries FROM svcbus.receive('jobs');
SELECT svcbus.ack('jobs', 1::bigint);

-- Priorities: higher first, then by send order.
SELECT svcbus.send('orders', '{"p": 0}');
SELECT svcbus.send('orders', '{"p": 9}', priority => 9);
SELECT svcbus.send('orders', '{"p": 5}', priority => 5);
SELECT svcbus.send('orders', '{"p": 9, "second": true}', priority => 9);
SELECT id, body, priority FROM svcbus.receive('orders', 10);
SELECT svcbus.ack('orders', ARRAY[3, 4, 5, 6]::bigint[]);

-- Delay: invisible until due; a waiting receive returns when it is.
SELECT svcbus.send('orders', '{"later": true}', delay => 0.5);
SELECT count(*) AS not_yet FROM svcbus.receive('orders');
SELECT delayed FROM svcbus.queue_stats WHERE name = 'orders';
SELECT id, body FROM svcbus.receive('orders', 1, wait => 5);
SELECT svcbus.ack('orders', 7::bigint);

-- Batches and opaque bodies.
SELECT * FROM svcbus.send_batch('orders', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[]);
SELECT svcbus.send_bytes('orders', '\xdeadbeef'::bytea);
SELECT id, body, body_bytes FROM svcbus.receive('orders', 10);
SELECT svcbus.ack('orders', ARRAY[8, 9, 10, 11]::bigint[]);

-- Deduplication: the same dedup_id within the window returns the first id.
SELECT svcbus.send('orders', '{"pay": 1}', dedup_id => 'invoice-17');
SELECT svcbus.send('orders', '{"pay": 1}', dedup_id => 'invoice-17');
SELECT count(*) AS stored_once FROM svcbus.receive('orders', 10);

-- Subtransactions: a send rolled back to a savepoint never happened.
BEGIN;
SELECT svcbus.send('orders', '{"keep": true}');
SAVEPOINT s1;
SELECT svcbus.send('orders', '{"keep": false}');
ROLLBACK TO s1;
COMMIT;
SELECT body FROM svcbus.receive('orders', 10);

-- Purge empties the queue (at commit); drop removes it.
SELECT svcbus.send('orders', '{"x": 1}');
SELECT svcbus.purge_queue('orders');
SELECT count(*) AS after_purge FROM svcbus.receive('orders', 10);
SELECT visible, in_flight FROM svcbus.queue_stats WHERE name = 'orders';
SELECT svcbus.drop_queue('jobs');
SELECT svcbus.drop_queue('jobs', if_exists => true);
SELECT name FROM svcbus.list_queues();
