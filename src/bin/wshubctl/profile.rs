//! Profiles: named admin targets kept in a file, so an operator types
//! `wshubctl --profile prod stats` rather than five flags each time.
//!
//! ```toml
//! default = "local"            # used when no --profile is given
//!
//! [profiles.local]
//! addr = "127.0.0.1:50051"
//!
//! [profiles.prod]
//! addr = "https://admin.internal:50051"
//! token_file = "/etc/wshub/admin-token"
//! ca = "ca.pem"                # relative paths: from the file's folder
//! cert = "operator.pem"
//! key = "operator.key"
//! ```
//!
//! A flag or environment variable wins over the profile. The token is only
//! ever named by its file, so the profile file itself holds no secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file `--config` names when it is not given.
pub fn default_path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("wshubctl").join("config.toml"))
}

/// The profile file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The profile used when no `--profile` is given.
    default: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One admin target: the same settings as wshubctl's flags of those names.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub addr: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl File {
    /// Reads `path`. A file that is not there is an empty one when it was
    /// not asked for by name (`explicit` false).
    pub fn read(path: &Path, explicit: bool) -> Result<File, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(File::default()),
            Err(e) => return Err(format!("cannot read the profile file {}: {e}", path.display())),
        };
        let mut file: File = toml::from_str(&text).map_err(|e| format!("the profile file {}: {e}", path.display()))?;
        let folder = path.parent().unwrap_or(Path::new("."));
        for (name, profile) in &mut file.profiles {
            if profile.cert.is_some() != profile.key.is_some() {
                return Err(format!(
                    "profile \"{name}\" in {}: cert and key go together",
                    path.display()
                ));
            }
            for path in [
                &mut profile.token_file,
                &mut profile.ca,
                &mut profile.cert,
                &mut profile.key,
            ]
            .into_iter()
            .flatten()
            {
                if path.is_relative() {
                    *path = folder.join(&*path);
                }
            }
        }
        Ok(file)
    }

    /// The profile `name`, or the file's default when no name is given;
    /// `None` when neither is.
    pub fn pick(&self, name: Option<&str>, path: &Path) -> Result<Option<&Profile>, String> {
        let Some(name) = name.or(self.default.as_deref()) else {
            return Ok(None);
        };
        self.profiles.get(name).map(Some).ok_or_else(|| {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            match known.is_empty() {
                true => format!("no profile \"{name}\": {} has none", path.display()),
                false => format!(
                    "no profile \"{name}\" in {} (it has: {})",
                    path.display(),
                    known.join(", ")
                ),
            }
        })
    }

    /// Every profile, by name, and whether it is the default.
    pub fn list(&self) -> impl Iterator<Item = (&str, &Profile, bool)> {
        self.profiles
            .iter()
            .map(|(name, profile)| (name.as_str(), profile, self.default.as_deref() == Some(name)))
    }
}
