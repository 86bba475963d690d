-- A small shop: customers carry no date at all; invoices and their lines
-- are tied by real foreign keys (enforced: the engine's connections set
-- PRAGMA foreign_keys = ON, and so does this file).
PRAGMA foreign_keys = ON;
CREATE TABLE customers (
  id INTEGER NOT NULL PRIMARY KEY,
  email VARCHAR(190),
  name VARCHAR(190),
  is_active BOOLEAN NOT NULL DEFAULT 1
);
CREATE TABLE invoices (
  id INTEGER NOT NULL PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customers (id),
  number VARCHAR(20) NOT NULL,
  invoice_date DATE NOT NULL,
  total NUMERIC(10, 2) NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id, invoice_date);
CREATE INDEX invoices_date ON invoices (invoice_date);
CREATE TABLE invoice_lines (
  id INTEGER NOT NULL PRIMARY KEY,
  invoice_id INTEGER NOT NULL REFERENCES invoices (id),
  description VARCHAR(190) NOT NULL,
  amount NUMERIC(10, 2) NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id);
