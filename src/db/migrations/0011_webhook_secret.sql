-- The path secret of the deployment's Railway webhook (issue 10): generated once, shared by every
-- replica; not the API key (the earlier system put its API key in a URL stored at Railway).
ALTER TABLE deployment ADD COLUMN webhook_secret text;
