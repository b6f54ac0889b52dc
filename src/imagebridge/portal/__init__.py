"""The browser portal: patients, proxies, clinicians and administrators (``/portal``), shares (``/s``)."""
