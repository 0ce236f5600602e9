//! What `tesserad` needs beyond [`Node`](crate::Node): loading the config file and applying
//! command-line overrides with the precedence defaults < file < flags.

use std::net::IpAddr;
use std::path::Path;

use tessera_engine::EvictionPolicy;

use crate::config::{parse_bytes, ConfigError, NodeConfig};

/// Values given on the command line; `None` keeps the file's (or the default) value.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    pub cores: Option<usize>,
    /// `100mb`, `1gb`, `12345` ... (node total).
    pub maxmemory: Option<String>,
    pub maxmemory_policy: Option<String>,
    pub requirepass: Option<String>,
    /// Turns the admin HTTP port (`/metrics`, `/health`) on.
    pub admin_port: Option<u16>,
    pub admin_bind: Option<IpAddr>,
    /// `--cluster`: run as a cluster member (`cluster.enabled`); false keeps the file's value.
    pub cluster: bool,
    /// `--seeds host:port,...`: gossip addresses of seed nodes.
    pub seeds: Option<Vec<String>>,
    /// `--cluster-port`: peer (TCP) and gossip (UDP) port.
    pub cluster_port: Option<u16>,
    /// `--cluster-secret`: the cluster secret.
    pub cluster_secret: Option<String>,
}

/// Reads `path` (if any) as a TOML config, applies `overrides`, and validates the result.
pub fn load_config(path: Option<&Path>, overrides: &Overrides) -> Result<NodeConfig, ConfigError> {
    let mut cfg = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid {
                field: "config file",
                reason: format!("{}: {e}", p.display()),
            })?;
            NodeConfig::from_toml(&text)?
        }
        None => NodeConfig::default(),
    };
    overrides.apply(&mut cfg)?;
    cfg.validate()?;
    Ok(cfg)
}

impl Overrides {
    /// Applies every given value to `cfg`.
    pub fn apply(&self, cfg: &mut NodeConfig) -> Result<(), ConfigError> {
        if let Some(b) = self.bind {
            cfg.net.bind = b;
        }
        if let Some(p) = self.port {
            cfg.net.port = p;
        }
        if let Some(c) = self.cores {
            cfg.runtime.cores = c;
        }
        if let Some(m) = &self.maxmemory {
            cfg.engine.maxmemory_bytes = parse_bytes(m).ok_or_else(|| ConfigError::Invalid {
                field: "maxmemory",
                reason: format!("'{m}' is not a size (examples: 0, 1048576, 100mb, 1gb)"),
            })?;
        }
        if let Some(p) = &self.maxmemory_policy {
            cfg.engine.maxmemory_policy =
                EvictionPolicy::parse(p).ok_or_else(|| ConfigError::Invalid {
                    field: "maxmemory-policy",
                    reason: format!("unknown policy '{p}'"),
                })?;
        }
        if let Some(p) = &self.requirepass {
            cfg.net.requirepass.clone_from(p);
        }
        if let Some(p) = self.admin_port {
            cfg.admin.port = Some(p);
        }
        if let Some(b) = self.admin_bind {
            cfg.admin.bind = b;
        }
        if self.cluster {
            cfg.cluster.enabled = true;
        }
        if let Some(s) = &self.seeds {
            cfg.cluster.seeds.clone_from(s);
        }
        if let Some(p) = self.cluster_port {
            cfg.cluster.cluster_port = p;
        }
        if let Some(s) = &self.cluster_secret {
            cfg.cluster.secret.clone_from(s);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("tessera-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.toml");
        std::fs::write(
            &path,
            "[net]\nport = 7000\nrequirepass = \"file\"\n[runtime]\ncores = 1\n",
        )
        .unwrap();
        let cfg = load_config(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(cfg.net.port, 7000);
        assert_eq!(cfg.net.requirepass, "file");
        assert_eq!(cfg.net.read_bytes, 16 * 1024, "default kept");
        let o = Overrides {
            port: Some(7001),
            maxmemory: Some("100mb".into()),
            maxmemory_policy: Some("allkeys-lru".into()),
            ..Overrides::default()
        };
        let cfg = load_config(Some(&path), &o).unwrap();
        assert_eq!(cfg.net.port, 7001);
        assert_eq!(cfg.net.requirepass, "file");
        assert_eq!(cfg.engine.maxmemory_bytes, 100 * 1024 * 1024);
        assert_eq!(cfg.engine.maxmemory_policy, EvictionPolicy::AllkeysLru);
        let clustered = Overrides {
            cluster: true,
            seeds: Some(vec!["127.0.0.1:24001".into()]),
            cluster_port: Some(24002),
            cluster_secret: Some("s".into()),
            ..Overrides::default()
        };
        let cfg = load_config(Some(&path), &clustered).unwrap();
        assert!(cfg.cluster.enabled);
        assert_eq!(cfg.cluster.seeds, vec!["127.0.0.1:24001".to_owned()]);
        assert_eq!(cfg.cluster.cluster_port, 24002);
        let no_secret = Overrides {
            cluster: true,
            ..Overrides::default()
        };
        assert!(load_config(None, &no_secret)
            .unwrap_err()
            .to_string()
            .contains("cluster.secret"));
        let bad = Overrides {
            maxmemory: Some("lots".into()),
            ..Overrides::default()
        };
        assert!(load_config(None, &bad)
            .unwrap_err()
            .to_string()
            .contains("lots"));
        std::fs::write(&path, "[net]\nbogus = 1\n").unwrap();
        let err = load_config(Some(&path), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
