-- The notification worker keeps personal values sealed with the customer's data key (ADR
-- 0020), as base64 text in the same columns, as the read models do (0170): the e-mail and
-- name of its recipients, and each notification's recipient and body. A row's `sealed`
-- says which it holds (clear: encryption off, or not sealed by `ordo privacy migrate` yet).
ALTER TABLE notification.customers ADD COLUMN sealed boolean NOT NULL DEFAULT false;
ALTER TABLE notification.notifications ADD COLUMN sealed boolean NOT NULL DEFAULT false;
