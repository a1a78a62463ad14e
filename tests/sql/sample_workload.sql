-- A day of activity on the sample schema: onboarding, invoicing, payments, a correction and a
-- cancellation, each business step in its own transaction as an application would do it.
BEGIN;
INSERT INTO customers (name, country, credit_limit, attributes) VALUES
    ('Acme Corporation', 'US', 250000.00, '{"segment": "enterprise", "vat_id": null}'),
    ('Zoë''s Bäckerei GmbH', 'DE', 15000.00, '{"segment": "smb"}'),
    ('Nakamura Trading 中村', 'JP', 0.00, '{"segment": "smb", "tags": ["new"]}');
COMMIT;

BEGIN;
INSERT INTO invoices (customer_id, number, amount, currency, issued_on, due_on, lines)
SELECT c.id, 'INV-2026-' || lpad(c.id::text, 4, '0'), v.amount, v.currency, date '2026-11-01', date '2026-12-01',
       jsonb_build_array(jsonb_build_object('sku', 'SUB-' || c.id, 'qty', 1, 'unit_price', v.amount))
FROM customers c
JOIN (VALUES ('US', 12999.99, 'USD'), ('DE', 1234.50, 'EUR'), ('JP', 880000, 'JPY')) AS v(country, amount, currency)
  ON v.country = c.country;
INSERT INTO ledger_entries (booked_at, account, debit, memo, tags)
SELECT '2026-11-01 09:00:00+00', 'receivables:' || number, amount, 'invoice issued', ARRAY['invoice', currency]
FROM invoices;
COMMIT;

BEGIN;
INSERT INTO payments (invoice_id, amount, method, received_at, reference)
SELECT id, amount, 'transfer', '2026-11-24 14:30:15.123456+00', 'SEPA-' || number FROM invoices WHERE currency = 'EUR';
UPDATE invoices SET status = 'paid' WHERE currency = 'EUR';
INSERT INTO ledger_entries (booked_at, account, credit, memo, tags)
SELECT '2026-11-24 14:30:15.123456+00', 'receivables:' || number, amount, 'payment received', ARRAY['payment']
FROM invoices WHERE currency = 'EUR';
COMMIT;

-- A correction: the US invoice was 0.01 too high.
UPDATE invoices SET amount = amount - 0.01, lines = jsonb_set(lines, '{0,unit_price}', '12999.98') WHERE currency = 'USD';

-- A cancellation, with its reversing ledger entry.
BEGIN;
UPDATE invoices SET status = 'cancelled' WHERE currency = 'JPY';
INSERT INTO ledger_entries (booked_at, account, credit, memo) VALUES
    ('2026-11-24 17:00:00+00', 'receivables:INV-2026-0003', 880000, 'invoice cancelled');
COMMIT;

-- An onboarding that never happened: created by mistake, removed again.
INSERT INTO customers (name, country) VALUES ('Test account (delete me)', 'GB');
DELETE FROM customers WHERE name = 'Test account (delete me)';
