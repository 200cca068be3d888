-- Events whose personal fields (ordo_domain::personal::personal_fields) are stored in clear:
-- present, not null, and not a sealed value ({"sealed": ...}). Counted in all, and for the
-- customers already erased.
WITH fields (event_type, field) AS (
    VALUES ('customer.registered', 'email'), ('customer.registered', 'name'),
           ('customer.registered', 'phone'), ('customer.note_added', 'text'),
           ('order.placed', 'shipping_address')
), clear AS (
    SELECT DISTINCT e.global_position, e.payload ->> 'customer_id' AS customer_id
      FROM event_store.events e JOIN fields f ON f.event_type = e.event_type
     WHERE jsonb_typeof(e.payload -> f.field) NOT IN ('null')
       AND NOT (jsonb_typeof(e.payload -> f.field) = 'object' AND e.payload -> f.field ? 'sealed')
)
SELECT count(*),
       count(*) FILTER (WHERE EXISTS (SELECT 1 FROM privacy.customer_keys k
                                       WHERE k.customer_id::text = clear.customer_id
                                         AND k.erased_at IS NOT NULL))
  FROM clear
