-- Everything that happened to order $1, oldest first: the order's own moves, the webhooks
-- that changed it, payments, jobs and their attempts, entitlements, grants, downloads, emails,
-- credits and operator actions (`operator::reads::timeline`).
SELECT at AS "at!", kind AS "kind!", detail AS "detail!" FROM (
    SELECT o.created_at AS at, 'order.created' AS kind, jsonb_build_object('total_cents', o.total_cents, 'currency', o.currency) AS detail FROM orders o WHERE o.id = $1
    UNION ALL SELECT o.paid_at, 'order.paid', '{}'::jsonb FROM orders o WHERE o.id = $1 AND o.paid_at IS NOT NULL
    UNION ALL SELECT o.fulfilled_at, 'order.fulfilled', '{}'::jsonb FROM orders o WHERE o.id = $1 AND o.fulfilled_at IS NOT NULL
    UNION ALL SELECT o.refunded_at, 'order.' || o.status, '{}'::jsonb FROM orders o WHERE o.id = $1 AND o.refunded_at IS NOT NULL
    UNION ALL SELECT o.expired_at, 'order.expired', jsonb_build_object('reason', o.expire_reason) FROM orders o WHERE o.id = $1 AND o.expired_at IS NOT NULL
    UNION ALL SELECT w.received_at, 'webhook.received', jsonb_build_object('id', w.id, 'provider', w.provider, 'type', w.event_type, 'status', w.status, 'action', e.action, 'error', w.last_error, 'found_by', w.found_by)
        FROM webhook_event_effects e JOIN webhook_events w ON w.id = e.webhook_event_id WHERE e.entity = 'order' AND e.entity_id = $1
    UNION ALL SELECT t.created_at, 'payment.' || t.kind, jsonb_build_object('provider', t.provider, 'provider_payment_id', t.provider_payment_id, 'amount_cents', t.amount_cents, 'currency', t.currency)
        FROM payment_transactions t WHERE t.order_id = $1
    UNION ALL SELECT a.started_at, 'job.attempt', jsonb_build_object('job_id', a.job_id, 'kind', a.queue, 'attempt', a.attempt, 'worker', a.worker_id, 'outcome', a.outcome, 'error', a.error, 'finished_at', a.finished_at)
        FROM job_attempts a JOIN job_refs r ON r.job_id = a.job_id WHERE r.order_id = $1
    UNION ALL SELECT r.created_at, 'job.enqueued', jsonb_build_object('job_id', r.job_id, 'kind', r.queue)
        FROM job_refs r WHERE r.order_id = $1
    UNION ALL SELECT e.granted_at, 'entitlement.granted', jsonb_build_object('feature', e.feature_key)
        FROM entitlements e JOIN order_items oi ON e.source_type = 'order_item' AND e.source_id = oi.id::text WHERE oi.order_id = $1
    UNION ALL SELECT e.revoked_at, 'entitlement.revoked', jsonb_build_object('feature', e.feature_key, 'reason', e.revoke_reason)
        FROM entitlements e JOIN order_items oi ON e.source_type = 'order_item' AND e.source_id = oi.id::text WHERE oi.order_id = $1 AND e.revoked_at IS NOT NULL
    UNION ALL SELECT g.created_at, CASE WHEN g.asset_id IS NULL THEN 'grant.placeholder' ELSE 'grant.issued' END, jsonb_build_object('grant_id', g.id, 'asset_id', g.asset_id, 'max_downloads', g.max_downloads, 'expires_at', g.expires_at)
        FROM download_grants g JOIN order_items oi ON oi.id = g.order_item_id WHERE oi.order_id = $1
    UNION ALL SELECT g.revoked_at, 'grant.revoked', jsonb_build_object('grant_id', g.id, 'reason', g.revoke_reason)
        FROM download_grants g JOIN order_items oi ON oi.id = g.order_item_id WHERE oi.order_id = $1 AND g.revoked_at IS NOT NULL
    UNION ALL SELECT d.created_at, 'download', jsonb_build_object('grant_id', d.grant_id)
        FROM download_events d JOIN download_grants g ON g.id = d.grant_id JOIN order_items oi ON oi.id = g.order_item_id WHERE oi.order_id = $1
    UNION ALL SELECT m.created_at, 'email.queued', jsonb_build_object('email_id', m.id, 'kind', m.kind, 'status', m.status, 'to', m.to_address, 'error', m.last_error, 'skip_reason', m.skip_reason)
        FROM emails m WHERE m.order_id = $1
    UNION ALL SELECT m.sent_at, 'email.' || m.status, jsonb_build_object('email_id', m.id, 'kind', m.kind, 'provider_message_id', m.provider_message_id)
        FROM emails m WHERE m.order_id = $1 AND m.sent_at IS NOT NULL
    UNION ALL SELECT c.created_at, CASE WHEN c.source_type = 'refund' THEN 'credits.taken_back' ELSE 'credits.added' END,
           jsonb_build_object('unit', c.unit, 'amount', c.amount, 'balance_after', c.balance_after, 'shortfall', c.shortfall, 'reason', c.reason)
        FROM credit_entries c WHERE c.order_id = $1
    UNION ALL SELECT x.created_at, 'operator.' || x.action, jsonb_build_object('actor', x.actor, 'reason', x.reason, 'details', x.details)
        FROM operator_actions x WHERE x.target_type = 'order' AND x.target_id = $1::text
    UNION ALL SELECT x.created_at, 'operator.' || x.action, jsonb_build_object('actor', x.actor, 'reason', x.reason, 'job_id', r.job_id, 'kind', r.queue, 'details', x.details)
        FROM operator_actions x JOIN job_refs r ON x.target_type = 'job' AND x.target_id = r.job_id WHERE r.order_id = $1
    UNION ALL SELECT x.created_at, 'operator.' || x.action, jsonb_build_object('actor', x.actor, 'reason', x.reason, 'grant_id', g.id, 'details', x.details)
        FROM operator_actions x JOIN download_grants g ON x.target_type = 'download_grant' AND x.target_id = g.id::text
        JOIN order_items oi ON oi.id = g.order_item_id WHERE oi.order_id = $1
) t
-- Events of one transaction share a timestamp: show them in causal order.
ORDER BY at, CASE
    WHEN kind = 'order.created' THEN 0 WHEN kind = 'webhook.received' THEN 1 WHEN kind LIKE 'payment.%' THEN 2
    WHEN kind LIKE 'order.%' THEN 3 WHEN kind LIKE 'entitlement.%' THEN 4 WHEN kind LIKE 'grant.%' OR kind LIKE 'credits.%' THEN 5
    WHEN kind = 'email.queued' THEN 6 WHEN kind = 'job.enqueued' THEN 7 WHEN kind = 'job.attempt' THEN 8
    ELSE 9 END, kind
