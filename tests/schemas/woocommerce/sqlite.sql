-- The same tables on SQLite (as WordPress's SQLite Database Integration
-- plugin keeps them: DATETIME columns holding text, LONGTEXT as TEXT).
-- Values are stored as the text the application wrote, including the
-- MySQL zero date and a 'T' separator.
PRAGMA foreign_keys = ON;
CREATE TABLE wp_users (
  ID INTEGER NOT NULL PRIMARY KEY,
  user_login VARCHAR(60) NOT NULL DEFAULT '',
  user_pass VARCHAR(255) NOT NULL DEFAULT '',
  user_nicename VARCHAR(50) NOT NULL DEFAULT '',
  user_email VARCHAR(100) NOT NULL DEFAULT '',
  user_url VARCHAR(100) NOT NULL DEFAULT '',
  user_registered DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  user_activation_key VARCHAR(255) NOT NULL DEFAULT '',
  user_status INTEGER NOT NULL DEFAULT 0,
  display_name VARCHAR(250) NOT NULL DEFAULT ''
);
CREATE INDEX user_login_key ON wp_users (user_login);
CREATE TABLE wp_usermeta (
  umeta_id INTEGER NOT NULL PRIMARY KEY,
  user_id INTEGER NOT NULL DEFAULT 0,
  meta_key VARCHAR(255) DEFAULT NULL,
  meta_value TEXT
);
CREATE INDEX wp_usermeta_user_id ON wp_usermeta (user_id);
CREATE TABLE wp_wc_customer_lookup (
  customer_id INTEGER NOT NULL PRIMARY KEY,
  user_id INTEGER DEFAULT NULL UNIQUE,
  username VARCHAR(60) NOT NULL DEFAULT '',
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(100) NULL DEFAULT NULL,
  date_last_active DATETIME NULL DEFAULT NULL,
  date_registered DATETIME NULL DEFAULT NULL,
  country CHAR(2) NOT NULL DEFAULT '',
  postcode VARCHAR(20) NOT NULL DEFAULT '',
  city VARCHAR(100) NOT NULL DEFAULT '',
  state VARCHAR(100) NOT NULL DEFAULT ''
);
CREATE TABLE wp_wc_order_stats (
  order_id INTEGER NOT NULL PRIMARY KEY,
  parent_id INTEGER NOT NULL DEFAULT 0,
  date_created DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  date_created_gmt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  date_paid DATETIME DEFAULT '0000-00-00 00:00:00',
  date_completed DATETIME DEFAULT '0000-00-00 00:00:00',
  num_items_sold INTEGER NOT NULL DEFAULT 0,
  total_sales DOUBLE NOT NULL DEFAULT 0,
  tax_total DOUBLE NOT NULL DEFAULT 0,
  shipping_total DOUBLE NOT NULL DEFAULT 0,
  net_total DOUBLE NOT NULL DEFAULT 0,
  returning_customer TINYINT DEFAULT NULL,
  status VARCHAR(200) NOT NULL,
  customer_id INTEGER NOT NULL
);
CREATE INDEX wp_wc_order_stats_customer_id ON wp_wc_order_stats (customer_id);
CREATE TABLE wp_woocommerce_sessions (
  session_id INTEGER NOT NULL PRIMARY KEY,
  session_key CHAR(32) NOT NULL UNIQUE,
  session_value TEXT NOT NULL,
  session_expiry BIGINT NOT NULL
);
CREATE TABLE wp_comments (
  comment_ID INTEGER NOT NULL PRIMARY KEY,
  comment_post_ID INTEGER NOT NULL DEFAULT 0,
  comment_author TEXT NOT NULL,
  comment_author_email VARCHAR(100) NOT NULL DEFAULT '',
  comment_author_url VARCHAR(200) NOT NULL DEFAULT '',
  comment_author_IP VARCHAR(100) NOT NULL DEFAULT '',
  comment_date DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  comment_date_gmt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  comment_content TEXT NOT NULL,
  comment_karma INTEGER NOT NULL DEFAULT 0,
  comment_approved VARCHAR(20) NOT NULL DEFAULT '1',
  comment_agent VARCHAR(255) NOT NULL DEFAULT '',
  comment_type VARCHAR(20) NOT NULL DEFAULT 'comment',
  comment_parent INTEGER NOT NULL DEFAULT 0,
  user_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX wp_comments_comment_date_gmt ON wp_comments (comment_date_gmt);
-- WooCommerce 8 order storage (HPOS): the order itself, with the billing e-mail address.
CREATE TABLE wp_wc_orders (
  id INTEGER NOT NULL PRIMARY KEY,
  status VARCHAR(20) DEFAULT NULL,
  type VARCHAR(20) DEFAULT NULL,
  customer_id INTEGER DEFAULT NULL,
  billing_email VARCHAR(320) DEFAULT NULL,
  date_created_gmt DATETIME DEFAULT NULL
);
-- The order's addresses and line items (HPOS and classic storage alike), retained with their order.
CREATE TABLE wp_wc_order_addresses (
  id INTEGER NOT NULL PRIMARY KEY,
  order_id INTEGER NOT NULL,
  address_type VARCHAR(20) DEFAULT NULL,
  first_name TEXT,
  last_name TEXT,
  address_1 TEXT,
  city TEXT,
  postcode TEXT,
  email VARCHAR(320) DEFAULT NULL,
  phone VARCHAR(100) DEFAULT NULL,
  UNIQUE (address_type, order_id)
);
CREATE INDEX wp_wc_order_addresses_order_id ON wp_wc_order_addresses (order_id);
CREATE TABLE wp_woocommerce_order_items (
  order_item_id INTEGER NOT NULL PRIMARY KEY,
  order_item_name TEXT NOT NULL,
  order_item_type VARCHAR(200) NOT NULL DEFAULT '',
  order_id INTEGER NOT NULL
);
CREATE INDEX wp_woocommerce_order_items_order_id ON wp_woocommerce_order_items (order_id);
CREATE TABLE wp_woocommerce_order_itemmeta (
  meta_id INTEGER NOT NULL PRIMARY KEY,
  order_item_id INTEGER NOT NULL,
  meta_key VARCHAR(255) DEFAULT NULL,
  meta_value TEXT
);
CREATE INDEX wp_woocommerce_order_itemmeta_order_item_id ON wp_woocommerce_order_itemmeta (order_item_id);
