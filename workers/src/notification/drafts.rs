//! The e-mails' texts, one per kind, before the recipient is known.

use ordo_domain::order::{OrderCancelled, OrderPlaced, OrderShipped};
use ordo_domain::payment::PaymentRefunded;
use ordo_domain::{Amount, Currency};
use uuid::Uuid;

fn money(amount: Amount, currency: &Currency) -> String {
    currency.format_minor(amount.get())
}

/// One e-mail to write, before the recipient is known.
pub(super) struct Draft {
    pub kind: &'static str,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub subject: String,
    /// The text after the greeting.
    pub text: String,
}

pub(super) fn placed(e: &OrderPlaced) -> Draft {
    let lines: String = e
        .lines
        .iter()
        .map(|l| {
            format!(
                "  {} x {} ({}): {}\n",
                l.quantity.get(),
                l.name.as_str(),
                l.sku.as_str(),
                money(l.line_total, &e.currency)
            )
        })
        .collect();
    Draft {
        kind: "order_placed",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has been placed", e.order_id),
        text: format!(
            "thank you for your order {}.\n\n{lines}\nTotal: {}\n",
            e.order_id,
            money(e.total, &e.currency)
        ),
    }
}

pub(super) fn shipped(e: &OrderShipped) -> Draft {
    let what = if e.fully_shipped {
        "The rest of your order is on its way."
    } else {
        "Part of your order is on its way; we will tell you when the rest ships."
    };
    Draft {
        kind: "order_shipped",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has shipped", e.order_id),
        text: format!(
            "shipment {} of your order {} has left us with {}, tracking number {}.\n{what}\n",
            e.shipment_number,
            e.order_id,
            e.carrier.as_str(),
            e.tracking_number.as_str()
        ),
    }
}

pub(super) fn cancelled(e: &OrderCancelled) -> Draft {
    Draft {
        kind: "order_cancelled",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!("Your order {} has been cancelled", e.order_id),
        text: format!(
            "your order {} ({}) has been cancelled: {}.\nAnything you paid will be refunded.\n",
            e.order_id,
            money(e.total, &e.currency),
            e.reason.as_str()
        ),
    }
}

pub(super) fn refunded(e: &PaymentRefunded) -> Draft {
    Draft {
        kind: "payment_refunded",
        order_id: e.order_id,
        customer_id: e.customer_id,
        subject: format!(
            "Refund of {} for your order {}",
            money(e.amount, &e.currency),
            e.order_id
        ),
        text: format!(
            "we have refunded {} for your order {}: {}.\nRefunded on this payment so far: {}.\n",
            money(e.amount, &e.currency),
            e.order_id,
            e.reason.as_str(),
            money(e.refunded_total, &e.currency)
        ),
    }
}
