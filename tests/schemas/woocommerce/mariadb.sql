-- WordPress + WooCommerce tables as a WooCommerce install creates them on
-- MySQL/MariaDB (names, column types and keys from WordPress's schema and
-- WooCommerce's installer), trimmed to the tables the pack uses. The test
-- creates the database with COLLATE utf8mb4_unicode_520_ci, WordPress's
-- default on MariaDB, and the tables inherit it.
CREATE TABLE wp_users (
  ID BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  user_login VARCHAR(60) NOT NULL DEFAULT '',
  user_pass VARCHAR(255) NOT NULL DEFAULT '',
  user_nicename VARCHAR(50) NOT NULL DEFAULT '',
  user_email VARCHAR(100) NOT NULL DEFAULT '',
  user_url VARCHAR(100) NOT NULL DEFAULT '',
  user_registered DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  user_activation_key VARCHAR(255) NOT NULL DEFAULT '',
  user_status INT(11) NOT NULL DEFAULT 0,
  display_name VARCHAR(250) NOT NULL DEFAULT '',
  PRIMARY KEY (ID),
  KEY user_login_key (user_login),
  KEY user_email (user_email)
);
CREATE TABLE wp_usermeta (
  umeta_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,
  meta_key VARCHAR(255) DEFAULT NULL,
  meta_value LONGTEXT,
  PRIMARY KEY (umeta_id),
  KEY user_id (user_id),
  KEY meta_key (meta_key(191))
);
CREATE TABLE wp_wc_customer_lookup (
  customer_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT(20) UNSIGNED DEFAULT NULL,
  username VARCHAR(60) NOT NULL DEFAULT '',
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(100) NULL DEFAULT NULL,
  date_last_active TIMESTAMP NULL DEFAULT NULL,
  date_registered TIMESTAMP NULL DEFAULT NULL,
  country CHAR(2) NOT NULL DEFAULT '',
  postcode VARCHAR(20) NOT NULL DEFAULT '',
  city VARCHAR(100) NOT NULL DEFAULT '',
  state VARCHAR(100) NOT NULL DEFAULT '',
  PRIMARY KEY (customer_id),
  UNIQUE KEY user_id (user_id),
  KEY email (email)
);
CREATE TABLE wp_wc_order_stats (
  order_id BIGINT(20) UNSIGNED NOT NULL,
  parent_id BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,
  date_created DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  date_created_gmt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  date_paid DATETIME DEFAULT '0000-00-00 00:00:00',
  date_completed DATETIME DEFAULT '0000-00-00 00:00:00',
  num_items_sold INT(11) NOT NULL DEFAULT 0,
  total_sales DOUBLE NOT NULL DEFAULT 0,
  tax_total DOUBLE NOT NULL DEFAULT 0,
  shipping_total DOUBLE NOT NULL DEFAULT 0,
  net_total DOUBLE NOT NULL DEFAULT 0,
  returning_customer TINYINT(1) DEFAULT NULL,
  status VARCHAR(200) NOT NULL,
  customer_id BIGINT(20) UNSIGNED NOT NULL,
  PRIMARY KEY (order_id),
  KEY date_created (date_created),
  KEY customer_id (customer_id),
  KEY status (status(191))
);
CREATE TABLE wp_woocommerce_sessions (
  session_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  session_key CHAR(32) NOT NULL,
  session_value LONGTEXT NOT NULL,
  session_expiry BIGINT(20) UNSIGNED NOT NULL,
  PRIMARY KEY (session_id),
  UNIQUE KEY session_key (session_key)
);
CREATE TABLE wp_comments (
  comment_ID BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  comment_post_ID BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,
  comment_author TINYTEXT NOT NULL,
  comment_author_email VARCHAR(100) NOT NULL DEFAULT '',
  comment_author_url VARCHAR(200) NOT NULL DEFAULT '',
  comment_author_IP VARCHAR(100) NOT NULL DEFAULT '',
  comment_date DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  comment_date_gmt DATETIME NOT NULL DEFAULT '0000-00-00 00:00:00',
  comment_content TEXT NOT NULL,
  comment_karma INT(11) NOT NULL DEFAULT 0,
  comment_approved VARCHAR(20) NOT NULL DEFAULT '1',
  comment_agent VARCHAR(255) NOT NULL DEFAULT '',
  comment_type VARCHAR(20) NOT NULL DEFAULT 'comment',
  comment_parent BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,
  user_id BIGINT(20) UNSIGNED NOT NULL DEFAULT 0,
  PRIMARY KEY (comment_ID),
  KEY comment_post_ID (comment_post_ID),
  KEY comment_date_gmt (comment_date_gmt),
  KEY comment_author_email (comment_author_email(10))
);
-- WooCommerce 8 order storage (HPOS): the order itself, with the billing e-mail address.
CREATE TABLE wp_wc_orders (
  id BIGINT(20) UNSIGNED NOT NULL,
  status VARCHAR(20) NULL,
  type VARCHAR(20) NULL,
  customer_id BIGINT(20) UNSIGNED NULL,
  billing_email VARCHAR(320) NULL,
  date_created_gmt DATETIME NULL,
  PRIMARY KEY (id),
  KEY billing_email (billing_email(191))
);
-- The order's addresses and line items (HPOS and classic storage alike), retained with their order.
CREATE TABLE wp_wc_order_addresses (
  id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  order_id BIGINT(20) UNSIGNED NOT NULL,
  address_type VARCHAR(20) NULL,
  first_name TEXT NULL,
  last_name TEXT NULL,
  address_1 TEXT NULL,
  city TEXT NULL,
  postcode TEXT NULL,
  email VARCHAR(320) NULL,
  phone VARCHAR(100) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY address_type_order_id (address_type, order_id),
  KEY order_id (order_id),
  KEY email (email(191))
);
CREATE TABLE wp_woocommerce_order_items (
  order_item_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  order_item_name TEXT NOT NULL,
  order_item_type VARCHAR(200) NOT NULL DEFAULT '',
  order_id BIGINT(20) UNSIGNED NOT NULL,
  PRIMARY KEY (order_item_id),
  KEY order_id (order_id)
);
CREATE TABLE wp_woocommerce_order_itemmeta (
  meta_id BIGINT(20) UNSIGNED NOT NULL AUTO_INCREMENT,
  order_item_id BIGINT(20) UNSIGNED NOT NULL,
  meta_key VARCHAR(255) DEFAULT NULL,
  meta_value LONGTEXT NULL,
  PRIMARY KEY (meta_id),
  KEY order_item_id (order_item_id),
  KEY meta_key (meta_key(32))
);
