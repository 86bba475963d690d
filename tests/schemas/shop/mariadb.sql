CREATE TABLE customers (
  id INT NOT NULL,
  email VARCHAR(190),
  name VARCHAR(190),
  is_active TINYINT(1) NOT NULL DEFAULT 1,
  PRIMARY KEY (id)
) ENGINE=InnoDB;
CREATE TABLE invoices (
  id INT NOT NULL,
  customer_id INT NOT NULL,
  number VARCHAR(20) NOT NULL,
  invoice_date DATE NOT NULL,
  total DECIMAL(10, 2) NOT NULL,
  PRIMARY KEY (id),
  KEY invoices_customer (customer_id, invoice_date),
  KEY invoices_date (invoice_date),
  CONSTRAINT invoices_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id)
) ENGINE=InnoDB;
CREATE TABLE invoice_lines (
  id INT NOT NULL,
  invoice_id INT NOT NULL,
  description VARCHAR(190) NOT NULL,
  amount DECIMAL(10, 2) NOT NULL,
  PRIMARY KEY (id),
  KEY invoice_lines_invoice (invoice_id),
  CONSTRAINT invoice_lines_invoice_fk FOREIGN KEY (invoice_id) REFERENCES invoices (id)
) ENGINE=InnoDB;
