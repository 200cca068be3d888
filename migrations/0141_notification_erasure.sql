-- Erasure (ADR 0020) in the notification worker's tables. The worker learns recipients from
-- customer.registered, whose e-mail and name are sealed with the customer's data key: it
-- opens them through the key store. On customer.erased it forgets the address and name,
-- drops the recipient and body of the customer's notifications, and no longer mails them:
-- each later notification is recorded `skipped`, with the reason in `error`.
ALTER TABLE notification.customers
    ALTER COLUMN email DROP NOT NULL,
    ALTER COLUMN name DROP NOT NULL,
    ADD COLUMN erased_at timestamptz;

ALTER TABLE notification.notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notification.notifications
    ADD CONSTRAINT notifications_status_check
        CHECK (status IN ('pending', 'sent', 'recorded', 'failed', 'skipped'));
