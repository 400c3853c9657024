-- Bad input to the queue functions: each error has its SQLSTATE and
-- changes nothing.
SELECT svcbus.create_queue('errs');

-- Names: empty, too long, quoting and injection attempts.
SELECT svcbus.create_queue('');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue(repeat('x', 64));
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('a"; DROP TABLE svcbus_internal.queues; --');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('x''); DELETE FROM svcbus_internal.queues; --', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('errs');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue(NULL);
\echo :LAST_ERROR_SQLSTATE

-- Options.
SELECT svcbus.create_queue('o1', '{"visibility_timeout": -1}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"visibility_timeout": "soon"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"colour": "blue"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"overflow": "explode"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"overflow": "dead_letter"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"dead_letter_queue": "nowhere"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"dead_letter_queue": "o1"}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_queue('o1', '{"max_deliveries": 0}');
\echo :LAST_ERROR_SQLSTATE

-- Unknown queue.
SELECT svcbus.send('nope', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.drop_queue('nope');
\echo :LAST_ERROR_SQLSTATE

-- Bodies: invalid JSON, NULL, too large, headers not an object.
SELECT svcbus.send('errs', '{"unterminated": ');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', NULL);
\echo :LAST_ERROR_SQLSTATE
SET svcbus.max_message_bytes = 100;
SELECT svcbus.send('errs', jsonb_build_object('big', repeat('x', 200)));
\echo :LAST_ERROR_SQLSTATE
RESET svcbus.max_message_bytes;
SELECT svcbus.send('errs', '{}', headers => '[1]');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send_batch('errs', ARRAY['{}', NULL]::jsonb[]);
\echo :LAST_ERROR_SQLSTATE

-- Numbers out of range.
SELECT svcbus.send('errs', '{}', delay => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', '{}', delay => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', '{}', delay => 1e12);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', '{}', priority => 10);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', '{}', ttl => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('errs', '{}', group_key => '');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('errs', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('errs', 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('errs', 1, visibility_timeout => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM svcbus.receive('errs', 1, wait => -5);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.extend('errs', 1, -1);
\echo :LAST_ERROR_SQLSTATE

-- Settling what is not in flight, or another queue's message.
SELECT svcbus.create_queue('errs2');
SELECT svcbus.send('errs2', '{"mine": true}');
SELECT id FROM svcbus.receive('errs2');
SELECT svcbus.ack('errs', 1::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.nack('errs', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.extend('errs', 1, 10);
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.ack('errs2', ARRAY[1, NULL]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
-- None of the failures changed anything: the message is still in flight.
SELECT in_flight, acked_total FROM svcbus.queue_stats WHERE name = 'errs2';
SELECT svcbus.ack('errs2', 1::bigint);

-- A full queue with the reject policy refuses new messages.
SELECT svcbus.create_queue('small', '{"max_length": 2}');
SELECT svcbus.send('small', '{"n": 1}');
SELECT svcbus.send('small', '{"n": 2}');
SELECT svcbus.send('small', '{"n": 3}');
\echo :LAST_ERROR_SQLSTATE
SELECT visible FROM svcbus.queue_stats WHERE name = 'small';

-- PREPARE TRANSACTION is refused for transactions that used queues.
BEGIN;
SELECT svcbus.send('errs', '{}');
PREPARE TRANSACTION 'p1';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS nothing_sent FROM svcbus.receive('errs', 10);

SELECT svcbus.drop_queue('errs');
SELECT svcbus.drop_queue('errs2');
SELECT svcbus.drop_queue('small');

-- Only the database named by svcbus.database serves queues.
CREATE DATABASE svcbus_elsewhere;
\c svcbus_elsewhere
CREATE EXTENSION svcbus;
SELECT svcbus.create_queue('q');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.send('q', '{}');
\echo :LAST_ERROR_SQLSTATE
\c contrib_regression
DROP DATABASE svcbus_elsewhere;
