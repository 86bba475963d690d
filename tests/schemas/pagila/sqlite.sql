-- Sakila on SQLite (as the sakila-sqlite3 port declares it: DATE and
-- TIMESTAMP columns holding text), with real, enforced foreign keys.
PRAGMA foreign_keys = ON;
CREATE TABLE customer (
  customer_id INTEGER NOT NULL PRIMARY KEY,
  store_id INTEGER NOT NULL,
  first_name VARCHAR(45) NOT NULL,
  last_name VARCHAR(45) NOT NULL,
  email VARCHAR(50),
  address_id INTEGER NOT NULL,
  activebool BOOLEAN NOT NULL DEFAULT 1,
  create_date DATE NOT NULL,
  last_update TIMESTAMP,
  active INTEGER
);
CREATE TABLE rental (
  rental_id INTEGER NOT NULL PRIMARY KEY,
  rental_date TIMESTAMP NOT NULL,
  inventory_id INTEGER NOT NULL,
  customer_id INTEGER NOT NULL REFERENCES customer (customer_id) ON DELETE RESTRICT ON UPDATE CASCADE,
  return_date TIMESTAMP,
  staff_id INTEGER NOT NULL,
  last_update TIMESTAMP
);
CREATE INDEX idx_fk_rental_customer_id ON rental (customer_id, rental_date);
CREATE INDEX idx_rental_rental_date ON rental (rental_date);
CREATE TABLE payment (
  payment_id INTEGER NOT NULL PRIMARY KEY,
  customer_id INTEGER NOT NULL REFERENCES customer (customer_id) ON DELETE RESTRICT ON UPDATE CASCADE,
  staff_id INTEGER NOT NULL,
  rental_id INTEGER REFERENCES rental (rental_id) ON DELETE SET NULL ON UPDATE CASCADE,
  amount DECIMAL(5, 2) NOT NULL,
  payment_date TIMESTAMP NOT NULL
);
CREATE INDEX idx_fk_payment_rental_id ON payment (rental_id);
CREATE INDEX idx_payment_payment_date ON payment (payment_date);
