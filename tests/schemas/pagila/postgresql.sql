-- Pagila (the PostgreSQL port of MySQL's Sakila sample database): customer,
-- rental and payment with Pagila's column types, trimmed of the store,
-- staff, address and inventory tables (their ids stay as plain columns).
CREATE TABLE customer (
  customer_id integer NOT NULL PRIMARY KEY,
  store_id smallint NOT NULL,
  first_name varchar(45) NOT NULL,
  last_name varchar(45) NOT NULL,
  email varchar(50),
  address_id smallint NOT NULL,
  activebool boolean NOT NULL DEFAULT true,
  create_date date NOT NULL DEFAULT CURRENT_DATE,
  last_update timestamp without time zone DEFAULT now(),
  active integer
);
CREATE TABLE rental (
  rental_id integer NOT NULL PRIMARY KEY,
  rental_date timestamp without time zone NOT NULL,
  inventory_id integer NOT NULL,
  customer_id integer NOT NULL REFERENCES customer (customer_id) ON UPDATE CASCADE ON DELETE RESTRICT,
  return_date timestamp without time zone,
  staff_id smallint NOT NULL,
  last_update timestamp without time zone NOT NULL DEFAULT now()
);
CREATE INDEX idx_fk_rental_customer_id ON rental (customer_id, rental_date);
CREATE INDEX idx_rental_rental_date ON rental (rental_date);
CREATE TABLE payment (
  payment_id integer NOT NULL PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES customer (customer_id) ON UPDATE CASCADE ON DELETE RESTRICT,
  staff_id smallint NOT NULL,
  rental_id integer REFERENCES rental (rental_id) ON UPDATE CASCADE ON DELETE SET NULL,
  amount numeric(5, 2) NOT NULL,
  payment_date timestamp without time zone NOT NULL
);
CREATE INDEX idx_fk_payment_customer_id ON payment (customer_id);
CREATE INDEX idx_fk_payment_rental_id ON payment (rental_id);
CREATE INDEX idx_payment_payment_date ON payment (payment_date);
