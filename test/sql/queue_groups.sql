-- Ordered groups: messages with the same group_key are delivered one at a
-- time in send order; other groups (and ungrouped messages) go on in
-- parallel.
SELECT svcbus.create_queue('g', '{"visibility_timeout": 30}');
SELECT svcbus.send('g', '{"m": "a1"}', group_key => 'A');
SELECT svcbus.send('g', '{"m": "a2"}', group_key => 'A');
SELECT svcbus.send('g', '{"m": "b1"}', group_key => 'B');
SELECT svcbus.send('g', '{"m": "a3"}', group_key => 'A');
SELECT svcbus.send('g', '{"m": "free"}');
SELECT svcbus.send('g', '{"m": "b2"}', group_key => 'B');

-- One head per group, plus the ungrouped message.
SELECT id, body, group_key FROM svcbus.receive('g', 10);
SELECT visible, in_flight FROM svcbus.queue_stats WHERE name = 'g';

-- Acking A's head releases a2, and only a2.
SELECT svcbus.ack('g', 1::bigint);
SELECT id, body, group_key FROM svcbus.receive('g', 10);

-- A nacked head comes back before the rest of its group.
SELECT svcbus.nack('g', 3, 0);
SELECT id, body, group_key, deliveries FROM svcbus.receive('g', 10);
SELECT svcbus.ack('g', ARRAY[2, 3, 5]::bigint[]);
SELECT id, body, group_key FROM svcbus.receive('g', 10);
SELECT svcbus.ack('g', ARRAY[4, 6]::bigint[]);
SELECT count(*) AS drained FROM svcbus.receive('g', 10);
SELECT visible, in_flight, acked_total FROM svcbus.queue_stats WHERE name = 'g';
SELECT svcbus.drop_queue('g');
