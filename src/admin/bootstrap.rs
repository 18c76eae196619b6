//! First start: when no principal exists, create one owner principal and hand its
//! token to the operator through a file (SPEC §5).
//!
//! Several gateways may start at once on a shared store: `create_first_principal` is
//! atomic, so exactly one wins. The token is written to a temp file (mode 0600, same
//! directory) before the attempt, renamed over `token_file` only by the winner, and
//! removed by the losers. Only the file's path is logged, never the token.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;

use super::auth::AdminToken;
use crate::key::{OrgScope, Principal, Role, new_id};
use crate::store::KeyStore;

/// Name of the bootstrap principal.
pub const BOOTSTRAP_NAME: &str = "bootstrap owner";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// This process created the owner; its token is in `token_file`.
    Created {
        principal_id: String,
        token_file: PathBuf,
    },
    /// Principals exist already (made earlier, or by another replica just now).
    AlreadyInitialized,
}

/// Creates the first owner principal if there is none. See the module docs.
pub async fn bootstrap(
    store: &dyn KeyStore,
    token_file: &Path,
) -> anyhow::Result<BootstrapOutcome> {
    if !store
        .list_principals()
        .await
        .context("bootstrap: listing admin principals")?
        .is_empty()
    {
        return Ok(BootstrapOutcome::AlreadyInitialized);
    }
    let token = AdminToken::generate();
    let principal = Principal {
        id: new_id("prn"),
        name: BOOTSTRAP_NAME.to_string(),
        role: Role::Owner,
        orgs: OrgScope::All,
        api_access: true,
        disabled: false,
        created_at: Timestamp::now(),
        deleted_at: None,
        token_hash: token.hash,
        version: 1,
    };
    let temp = write_private_temp(token_file, &token.token)?;
    drop(token);

    let won = match store.create_first_principal(&principal).await {
        Ok(won) => won,
        Err(e) => {
            remove_quietly(&temp);
            return Err(e).context("bootstrap: creating the first admin principal");
        }
    };
    if !won {
        remove_quietly(&temp);
        return Ok(BootstrapOutcome::AlreadyInitialized);
    }
    // The principal exists now; if the rename fails the token is still in `temp`.
    fs::rename(&temp, token_file).with_context(|| {
        format!(
            "bootstrap: the owner principal was created but its token could not be moved \
             from {} to {}; move that file by hand",
            temp.display(),
            token_file.display()
        )
    })?;
    if let Some(dir) = token_file.parent()
        && let Ok(d) = File::open(dir)
    {
        // Makes the rename durable; a failure here only risks a lost file on power loss.
        let _ = d.sync_all();
    }
    tracing::info!(
        path = %token_file.display(),
        principal = %principal.id,
        "created the first admin principal (owner); its token is in this file"
    );
    Ok(BootstrapOutcome::Created {
        principal_id: principal.id,
        token_file: token_file.to_path_buf(),
    })
}

/// Writes `token` to a new file next to `token_file`, readable by the owner only.
fn write_private_temp(token_file: &Path, token: &str) -> anyhow::Result<PathBuf> {
    let dir = match token_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = token_file
        .file_name()
        .with_context(|| format!("bootstrap: {} is not a file path", token_file.display()))?;
    fs::create_dir_all(&dir)
        .with_context(|| format!("bootstrap: creating directory {}", dir.display()))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        ulid::Ulid::new()
    ));
    let write = || -> std::io::Result<()> {
        // create_new: never follows a symlink or reuses a file someone else prepared.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The umask can only remove bits; set 0600 exactly all the same.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write() {
        remove_quietly(&temp);
        return Err(e).with_context(|| {
            format!(
                "bootstrap: writing the admin token file in {}",
                dir.display()
            )
        });
    }
    Ok(temp)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a temp token file");
    }
}
