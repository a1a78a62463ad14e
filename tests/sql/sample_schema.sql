-- The sample financial schema used by the README's demo and by tests: customers, invoices,
-- payments and double-entry ledger entries, with exact numerics, timestamps and JSON.
CREATE TYPE payment_method AS ENUM ('card', 'transfer', 'direct_debit');

CREATE TABLE customers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    country char(2) NOT NULL,
    credit_limit numeric(14,2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    attributes jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE invoices (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    number text NOT NULL UNIQUE,
    amount numeric(14,2) NOT NULL,
    currency char(3) NOT NULL,
    issued_on date NOT NULL,
    due_on date NOT NULL,
    status text NOT NULL DEFAULT 'open',
    lines jsonb NOT NULL
);

CREATE TABLE payments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    invoice_id bigint NOT NULL REFERENCES invoices,
    amount numeric(14,2) NOT NULL,
    method payment_method NOT NULL,
    received_at timestamptz NOT NULL,
    reference text
);

CREATE TABLE ledger_entries (
    id bigserial PRIMARY KEY,
    booked_at timestamptz NOT NULL,
    account text NOT NULL,
    debit numeric(18,4) NOT NULL DEFAULT 0,
    credit numeric(18,4) NOT NULL DEFAULT 0,
    memo text,
    tags text[]
);
