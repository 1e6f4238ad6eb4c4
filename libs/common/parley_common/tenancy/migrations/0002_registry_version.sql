-- One number that changes with every write to the registry. Every replica of every service polls
-- it (twice a second by default) and reloads its tenant directory when it moved, so a revoked
-- API key stops working everywhere within about a second (docs/adr/0101-api-key-revocation.md).
CREATE TABLE tenancy.registry_version (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint NOT NULL
);
INSERT INTO tenancy.registry_version VALUES (true, 1);

CREATE FUNCTION tenancy.bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE tenancy.registry_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER meta_apps_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.meta_apps
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.bump_registry_version();
CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.bump_registry_version();
CREATE TRIGGER wabas_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.wabas
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.bump_registry_version();
CREATE TRIGGER phone_numbers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.phone_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.bump_registry_version();
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tenancy.api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy.bump_registry_version();
