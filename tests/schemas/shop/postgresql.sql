CREATE TABLE customers (
  id integer NOT NULL PRIMARY KEY,
  email varchar(190),
  name varchar(190),
  is_active boolean NOT NULL DEFAULT true
);
CREATE TABLE invoices (
  id integer NOT NULL PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customers (id),
  number varchar(20) NOT NULL,
  invoice_date date NOT NULL,
  total numeric(10, 2) NOT NULL
);
CREATE INDEX invoices_customer ON invoices (customer_id, invoice_date);
CREATE INDEX invoices_date ON invoices (invoice_date);
CREATE TABLE invoice_lines (
  id integer NOT NULL PRIMARY KEY,
  invoice_id integer NOT NULL REFERENCES invoices (id),
  description varchar(190) NOT NULL,
  amount numeric(10, 2) NOT NULL
);
CREATE INDEX invoice_lines_invoice ON invoice_lines (invoice_id);
