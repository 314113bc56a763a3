-- Every state and provider column has a CHECK naming its values, matching its Rust enum: the
-- one left without was `subscriptions.provider` (Clerk Billing writes it; Stripe is the other
-- provider a subscription could come from).
ALTER TABLE subscriptions
    ADD CONSTRAINT subscriptions_provider_check CHECK (provider IN ('clerk', 'stripe'));
