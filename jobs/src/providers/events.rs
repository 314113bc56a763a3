//! What Stripe's and Clerk's events carry, as types: each field Granary reads is named once
//! here, with what its absence means. Handlers never index raw JSON; money is the exception,
//! read strictly from the raw object by [`super::reported`] so that its errors name the field.
//!
//! Every field is optional in the type and checked by the handler that needs it: a required
//! field that is missing is an error there ("checkout session without id"), never a default. A
//! field of the wrong JSON type reads as absent, as a provider's own optional field would (a
//! `payment_intent` Stripe expanded into an object names no payment intent id), so a strange
//! payload is refused or ignored by the same checks, and never fails to parse.

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// A text field: a non-empty string, or absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(Option<String>);

impl Text {
    /// The text, if present and not empty.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Self(
            v.as_str().filter(|s| !s.is_empty()).map(str::to_string),
        ))
    }
}

/// A field of type `T`, or absent (missing, null, or another JSON type).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<T> Lenient<T> {
    /// The value, if it is a `T`.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(Self(T::deserialize(v).ok()))
    }
}

/// Reads `T` from `v`; anything but an object reads as a `T` with every field absent.
fn read<T: DeserializeOwned + Default>(v: &Value) -> T {
    T::deserialize(v).unwrap_or_default()
}

/// The `data.object` of a Stripe event Granary applies: a Checkout Session, a PaymentIntent, a
/// Charge or a Dispute.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StripeObject {
    /// The object's id (`cs_…`, `pi_…`, `ch_…`, `dp_…`).
    pub id: Text,
    /// A Checkout Session's order reference (Granary sets the order's public id).
    pub client_reference_id: Text,
    /// Granary's `order_id` in the object's metadata.
    pub metadata: Lenient<StripeMetadata>,
    /// The PaymentIntent a session or a charge belongs to.
    pub payment_intent: Text,
    /// The Charge a dispute is about.
    pub charge: Text,
    /// A session's `paid`, `unpaid` or `no_payment_required`, as sent (even empty).
    pub payment_status: Lenient<String>,
    /// A session's `payment`, `subscription` or `setup`, as sent.
    pub mode: Lenient<String>,
    /// A charge refunded in full.
    pub refunded: Lenient<bool>,
}

/// The metadata Granary writes on what it sends Stripe.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StripeMetadata {
    /// The order's public id or uuid.
    pub order_id: Text,
}

impl StripeObject {
    /// The `data.object` of event `body`.
    pub fn of(body: &Value) -> Self {
        read(&body["data"]["object"])
    }

    /// `metadata.order_id`.
    pub fn metadata_order(&self) -> Option<&str> {
        self.metadata.get().and_then(|m| m.order_id.get())
    }

    /// The order the object names: `client_reference_id`, else `metadata.order_id`.
    pub fn order_reference(&self) -> Option<&str> {
        self.client_reference_id
            .get()
            .or_else(|| self.metadata_order())
    }
}

/// The `data` of a Clerk `user.*` event.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkUser {
    /// The Clerk user id.
    pub id: Text,
    /// Which of `email_addresses` is the primary one.
    pub primary_email_address_id: Text,
    /// The user's addresses.
    pub email_addresses: Lenient<Vec<Lenient<ClerkEmail>>>,
    /// First name.
    pub first_name: Text,
    /// Last name.
    pub last_name: Text,
    /// Where Granary's role lives.
    pub public_metadata: Lenient<ClerkMetadata>,
}

/// One of a Clerk user's addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkEmail {
    /// Its id.
    pub id: Text,
    /// The address.
    pub email_address: Text,
}

/// A Clerk user's public metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkMetadata {
    /// `buyer`, `seller` or `admin`.
    pub role: Text,
}

impl ClerkUser {
    /// The `data` of event `body`.
    pub fn of(body: &Value) -> Self {
        read(&body["data"])
    }

    /// The primary address, else the first one listed.
    pub fn email(&self) -> Option<&str> {
        let emails: &[Lenient<ClerkEmail>] = self.email_addresses.get().map_or(&[], Vec::as_slice);
        let primary = self.primary_email_address_id.get();
        emails
            .iter()
            .find(|e| primary.is_some() && e.get().and_then(|e| e.id.get()) == primary)
            .or_else(|| emails.first())
            .and_then(|e| e.get())
            .and_then(|e| e.email_address.get())
    }

    /// The role in `public_metadata.role`.
    pub fn role(&self) -> Option<&str> {
        self.public_metadata.get().and_then(|m| m.role.get())
    }
}

/// The `data` of a Clerk `paymentAttempt.*` event (its total is read from the raw object).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkPaymentAttempt {
    /// The attempt's id.
    pub id: Text,
    /// The payment's id (older payloads).
    pub payment_id: Text,
    /// `paid`, `failed`, `pending`.
    pub status: Text,
    /// Who paid.
    pub payer: Lenient<ClerkPayer>,
    /// Who paid (older payloads).
    pub user_id: Text,
    /// The subscription items it pays.
    pub subscription_items: Lenient<Vec<Lenient<ClerkAttemptItem>>>,
    /// The plan it pays, when it names one itself.
    pub plan_id: Text,
    /// The same, as an object.
    pub plan: Lenient<ClerkPlan>,
    /// The plan's period: `month` or `annual`.
    pub plan_period: Text,
    /// `recurring` for a renewal, `checkout` for a first payment.
    pub charge_type: Text,
}

/// The payer of a Clerk payment attempt.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkPayer {
    /// The Clerk user id.
    pub user_id: Text,
}

/// A plan reference.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkPlan {
    /// The plan id.
    pub id: Text,
}

/// A subscription item a Clerk payment attempt pays.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ClerkAttemptItem {
    /// Its plan.
    pub plan: Lenient<ClerkPlan>,
    /// Its plan id (flat).
    pub plan_id: Text,
    /// Its period: `month` or `annual`.
    pub plan_period: Text,
}

impl ClerkPaymentAttempt {
    /// The `data` of event `body`.
    pub fn of(body: &Value) -> Self {
        read(&body["data"])
    }

    /// The attempt's id, else the payment's.
    pub fn attempt_id(&self) -> Option<&str> {
        self.id.get().or_else(|| self.payment_id.get())
    }

    /// The payer's Clerk user id.
    pub fn payer(&self) -> Option<&str> {
        self.payer
            .get()
            .and_then(|p| p.user_id.get())
            .or_else(|| self.user_id.get())
    }

    /// (plan id, its period as reported) for each item, and for the plan it names itself.
    pub fn items(&self) -> Vec<(String, Option<String>)> {
        let listed = self.subscription_items.get().map_or(&[][..], Vec::as_slice);
        let mut items: Vec<(String, Option<String>)> = listed
            .iter()
            .filter_map(|i| {
                let i = i.get()?;
                let plan = i
                    .plan
                    .get()
                    .and_then(|p| p.id.get())
                    .or_else(|| i.plan_id.get())?;
                Some((plan.to_string(), i.plan_period.get().map(str::to_string)))
            })
            .collect();
        let own = self
            .plan_id
            .get()
            .or_else(|| self.plan.get().and_then(|p| p.id.get()));
        if let Some(plan) = own {
            items.push((plan.to_string(), self.plan_period.get().map(str::to_string)));
        }
        items
    }
}
