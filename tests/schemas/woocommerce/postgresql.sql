-- The same WordPress + WooCommerce tables ported to PostgreSQL the way a
-- port keeps them: identifiers spelled as in WordPress (so "ID",
-- "comment_ID", "comment_post_ID" and "comment_author_IP" are quoted),
-- DATETIME as timestamp without time zone (the *_gmt columns and
-- user_registered hold UTC), LONGTEXT as text. PostgreSQL has no zero
-- date: the rows that MySQL fills with '0000-00-00 00:00:00' hold
-- '1000-01-01 00:00:00' instead, which the engine also reads as a zero date.
CREATE TABLE wp_users (
  "ID" bigint NOT NULL PRIMARY KEY,
  user_login varchar(60) NOT NULL DEFAULT '',
  user_pass varchar(255) NOT NULL DEFAULT '',
  user_nicename varchar(50) NOT NULL DEFAULT '',
  user_email varchar(100) NOT NULL DEFAULT '',
  user_url varchar(100) NOT NULL DEFAULT '',
  user_registered timestamp NOT NULL DEFAULT '1000-01-01 00:00:00',
  user_activation_key varchar(255) NOT NULL DEFAULT '',
  user_status integer NOT NULL DEFAULT 0,
  display_name varchar(250) NOT NULL DEFAULT ''
);
CREATE INDEX user_login_key ON wp_users (user_login);
CREATE TABLE wp_usermeta (
  umeta_id bigint NOT NULL PRIMARY KEY,
  user_id bigint NOT NULL DEFAULT 0,
  meta_key varchar(255) DEFAULT NULL,
  meta_value text
);
CREATE INDEX wp_usermeta_user_id ON wp_usermeta (user_id);
CREATE INDEX wp_usermeta_meta_key ON wp_usermeta (meta_key);
CREATE TABLE wp_wc_customer_lookup (
  customer_id bigint NOT NULL PRIMARY KEY,
  user_id bigint DEFAULT NULL UNIQUE,
  username varchar(60) NOT NULL DEFAULT '',
  first_name varchar(255) NOT NULL,
  last_name varchar(255) NOT NULL,
  email varchar(100) NULL DEFAULT NULL,
  date_last_active timestamp NULL DEFAULT NULL,
  date_registered timestamp NULL DEFAULT NULL,
  country char(2) NOT NULL DEFAULT '',
  postcode varchar(20) NOT NULL DEFAULT '',
  city varchar(100) NOT NULL DEFAULT '',
  state varchar(100) NOT NULL DEFAULT ''
);
CREATE TABLE wp_wc_order_stats (
  order_id bigint NOT NULL PRIMARY KEY,
  parent_id bigint NOT NULL DEFAULT 0,
  date_created timestamp NOT NULL DEFAULT '1000-01-01 00:00:00',
  date_created_gmt timestamp NOT NULL DEFAULT '1000-01-01 00:00:00',
  date_paid timestamp DEFAULT '1000-01-01 00:00:00',
  date_completed timestamp DEFAULT '1000-01-01 00:00:00',
  num_items_sold integer NOT NULL DEFAULT 0,
  total_sales double precision NOT NULL DEFAULT 0,
  tax_total double precision NOT NULL DEFAULT 0,
  shipping_total double precision NOT NULL DEFAULT 0,
  net_total double precision NOT NULL DEFAULT 0,
  returning_customer smallint DEFAULT NULL,
  status varchar(200) NOT NULL,
  customer_id bigint NOT NULL
);
CREATE INDEX wp_wc_order_stats_customer_id ON wp_wc_order_stats (customer_id);
CREATE INDEX wp_wc_order_stats_date_created ON wp_wc_order_stats (date_created);
CREATE TABLE wp_woocommerce_sessions (
  session_id bigint NOT NULL PRIMARY KEY,
  session_key char(32) NOT NULL UNIQUE,
  session_value text NOT NULL,
  session_expiry bigint NOT NULL
);
CREATE TABLE wp_comments (
  "comment_ID" bigint NOT NULL PRIMARY KEY,
  "comment_post_ID" bigint NOT NULL DEFAULT 0,
  comment_author text NOT NULL,
  comment_author_email varchar(100) NOT NULL DEFAULT '',
  comment_author_url varchar(200) NOT NULL DEFAULT '',
  "comment_author_IP" varchar(100) NOT NULL DEFAULT '',
  comment_date timestamp NOT NULL DEFAULT '1000-01-01 00:00:00',
  comment_date_gmt timestamp NOT NULL DEFAULT '1000-01-01 00:00:00',
  comment_content text NOT NULL,
  comment_karma integer NOT NULL DEFAULT 0,
  comment_approved varchar(20) NOT NULL DEFAULT '1',
  comment_agent varchar(255) NOT NULL DEFAULT '',
  comment_type varchar(20) NOT NULL DEFAULT 'comment',
  comment_parent bigint NOT NULL DEFAULT 0,
  user_id bigint NOT NULL DEFAULT 0
);
CREATE INDEX wp_comments_comment_date_gmt ON wp_comments (comment_date_gmt);
-- WooCommerce 8 order storage (HPOS): the order itself, with the billing e-mail address.
CREATE TABLE wp_wc_orders (
  id bigint NOT NULL PRIMARY KEY,
  status varchar(20) DEFAULT NULL,
  type varchar(20) DEFAULT NULL,
  customer_id bigint DEFAULT NULL,
  billing_email varchar(320) DEFAULT NULL,
  date_created_gmt timestamp DEFAULT NULL
);
-- The order's addresses and line items (HPOS and classic storage alike), retained with their order.
CREATE TABLE wp_wc_order_addresses (
  id bigint NOT NULL PRIMARY KEY,
  order_id bigint NOT NULL,
  address_type varchar(20) DEFAULT NULL,
  first_name text,
  last_name text,
  address_1 text,
  city text,
  postcode text,
  email varchar(320) DEFAULT NULL,
  phone varchar(100) DEFAULT NULL,
  UNIQUE (address_type, order_id)
);
CREATE INDEX wp_wc_order_addresses_order_id ON wp_wc_order_addresses (order_id);
CREATE TABLE wp_woocommerce_order_items (
  order_item_id bigint NOT NULL PRIMARY KEY,
  order_item_name text NOT NULL,
  order_item_type varchar(200) NOT NULL DEFAULT '',
  order_id bigint NOT NULL
);
CREATE INDEX wp_woocommerce_order_items_order_id ON wp_woocommerce_order_items (order_id);
CREATE TABLE wp_woocommerce_order_itemmeta (
  meta_id bigint NOT NULL PRIMARY KEY,
  order_item_id bigint NOT NULL,
  meta_key varchar(255) DEFAULT NULL,
  meta_value text
);
CREATE INDEX wp_woocommerce_order_itemmeta_order_item_id ON wp_woocommerce_order_itemmeta (order_item_id);
