-- Topics: publish delivers one copy to every subscribed queue whose
-- binding pattern matches the routing key (RabbitMQ topic semantics) and
-- whose header filter the headers contain.  Also replay and redrive.
SELECT svcbus.create_queue('all_events');
SELECT svcbus.create_queue('eu_orders');
SELECT svcbus.create_queue('big_orders');
SELECT svcbus.create_topic('events');
SELECT svcbus.subscribe('events', 'all_events');
SELECT svcbus.subscribe('events', 'eu_orders', 'orders.*.eu');
SELECT svcbus.subscribe('events', 'eu_orders', 'orders.#');
SELECT svcbus.subscribe('events', 'big_orders', 'orders.#', '{"size": "big"}');
SELECT * FROM svcbus.list_subscriptions();

SELECT svcbus.publish('events', 'orders.created.eu', '{"o": 1}', '{"size": "big"}');
SELECT svcbus.publish('events', 'orders.created.us', '{"o": 2}');
SELECT svcbus.publish('events', 'users.signup', '{"u": 3}');
SELECT * FROM (
  SELECT 'all' AS q, body, headers->>'x-routing-key' AS key FROM svcbus.receive('all_events', 10)
  UNION ALL
  SELECT 'eu', body, headers->>'x-routing-key' FROM svcbus.receive('eu_orders', 10)
  UNION ALL
  SELECT 'big', body, headers->>'x-routing-key' FROM svcbus.receive('big_orders', 10)
) r ORDER BY q, body::text;

-- A rolled-back publish delivers nowhere.
BEGIN;
SELECT svcbus.publish('events', 'orders.created.eu', '{"o": 4}');
ROLLBACK;
SELECT count(*) AS nothing FROM svcbus.receive('all_events', 10);

-- Bad routing keys and patterns.
SELECT svcbus.publish('events', 'orders..eu', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.publish('events', 'orders.*', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.subscribe('events', 'all_events', 'orders.x#');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.subscribe('events', 'all_events', '#', '"big"');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.publish('nope', 'a', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.create_topic('events');
\echo :LAST_ERROR_SQLSTATE
SELECT svcbus.grant_topic('events', 'public', 'subscribe');
\echo :LAST_ERROR_SQLSTATE

-- Publishing needs the publish right on the topic, not on each queue.
CREATE ROLE topic_publisher LOGIN;
SET ROLE topic_publisher;
SELECT svcbus.publish('events', 'users.login', '{}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT svcbus.grant_topic('events', 'topic_publisher', 'publish');
SET ROLE topic_publisher;
SELECT svcbus.publish('events', 'users.login', '{"who": "pub"}');
SELECT svcbus.subscribe('events', 'all_events', '#');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT body FROM svcbus.receive('all_events', 10);
SELECT svcbus.ack('all_events', ARRAY[1, 2, 3, 5]::bigint[]);

-- Replay: rewinding a queue delivers its retained messages again, acked or not.
SELECT svcbus.rewind('all_events', 2::bigint);
SELECT id, body FROM svcbus.receive('all_events', 10);
SELECT svcbus.rewind('all_events', 99::bigint);
\echo :LAST_ERROR_SQLSTATE

SELECT svcbus.unsubscribe('events', 'eu_orders');
SELECT count(*) FROM svcbus.list_subscriptions() WHERE queue = 'eu_orders';

-- Redrive: dead letters go back to a work queue in one transaction.
SELECT svcbus.create_queue('dead');
SELECT svcbus.send('dead', '{"retry": 1}', headers => '{"x-dead-letter-reason": "ttl", "k": 1}');
SELECT svcbus.send('dead', '{"retry": 2}');
SELECT svcbus.redrive('dead', 'big_orders', 10);
SELECT body, headers FROM svcbus.receive('big_orders', 10);
SELECT svcbus.redrive('dead', 'big_orders', 0);
\echo :LAST_ERROR_SQLSTATE

SELECT svcbus.drop_topic('events');
SELECT svcbus.drop_topic('events', true);
SELECT svcbus.drop_queue(q) FROM unnest(ARRAY['all_events', 'eu_orders', 'big_orders', 'dead']) q;
DROP ROLE topic_publisher;
