//! JWT verification with keys built at load (HS* from an env secret, RS*/ES*/EdDSA from a PEM
//! file or a JWKS document). Pure: `now` is passed in.

/// Validated `[jwt]` settings; secrets and key material already read (from env / files).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// HS* secret bytes, read from the env var named by `hs_secret_env`.
    pub hs_secret: Option<Vec<u8>>,
    /// Contents of `public_key_file` (RSA/EC/Ed25519 PEM).
    pub public_key_pem: Option<Vec<u8>>,
    /// Contents of `jwks_file` (a JWKS JSON document).
    pub jwks_json: Option<String>,
    /// `jwks_url`, fetched at start and refreshed on an unknown `kid`.
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: std::time::Duration,
}

/// Verifies bearer JWTs against the configured keys.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
}

impl JwtVerifier {
    /// Build keys once; every problem (bad PEM, key/alg mismatch, …) is returned together.
    pub fn new(settings: JwtSettings) -> Result<Self, Vec<String>> {
        // SKELETON
        Ok(Self { settings })
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }
}
