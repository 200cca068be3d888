//! cqrs-es adapters: each `Aggregate` impl calls the pure `decide` and `apply`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};

use crate::customer::{Customer, CustomerCommand, CustomerEvent};
use crate::event::EventName;
use crate::order::{Order, OrderCommand, OrderEvent};
use crate::payment::{Payment, PaymentCommand, PaymentEvent};
use crate::DomainError;

macro_rules! adapt {
    ($agg:ty, $type_name:literal, $cmd:ty, $event:ty) => {
        impl Aggregate for $agg {
            const TYPE: &'static str = $type_name;
            type Command = $cmd;
            type Event = $event;
            type Error = DomainError;
            type Services = ();

            async fn handle(
                &mut self,
                command: Self::Command,
                _services: &Self::Services,
                sink: &EventSink<Self>,
            ) -> Result<(), Self::Error> {
                for event in self.decide(command)? {
                    sink.write(event, self).await;
                }
                Ok(())
            }

            fn apply(&mut self, event: Self::Event) {
                <$agg>::apply(self, event)
            }
        }

        impl DomainEvent for $event {
            fn event_type(&self) -> String {
                self.name().to_owned()
            }

            fn event_version(&self) -> String {
                self.schema_version().to_string()
            }
        }
    };
}

adapt!(Order, "order", OrderCommand, OrderEvent);
adapt!(Payment, "payment", PaymentCommand, PaymentEvent);
adapt!(Customer, "customer", CustomerCommand, CustomerEvent);
