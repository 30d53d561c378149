//! Where artifact files live: one `object_store` interface over a folder in the data directory
//! (the embedded default) or an S3-compatible bucket (`s3://bucket/prefix`, credentials and
//! endpoint from the usual `AWS_*` variables). Signing, retries and multipart uploads are the
//! crate's; this module only names objects and opens the store.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactStoreError {
    #[error("artifacts URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("artifacts folder {path}: {source}")]
    Folder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// The artifacts' object storage.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Shown in logs and at start: where files go.
    location: String,
}

impl ArtifactStore {
    /// Opens `url` (`s3://bucket/prefix`, `file:///path`), or the `artifacts` folder of
    /// `data_dir` without one.
    pub fn open(url: Option<&str>, data_dir: &Path) -> Result<Self, ArtifactStoreError> {
        let bad = |reason: &str| ArtifactStoreError::Url {
            url: url.unwrap_or_default().to_owned(),
            reason: reason.to_owned(),
        };
        match url {
            None => Self::folder(&data_dir.join("artifacts")),
            Some(u) if u.starts_with("file://") => {
                Self::folder(Path::new(u.trim_start_matches("file://")))
            }
            Some(u) if u.starts_with("s3://") => {
                let rest = u.trim_start_matches("s3://");
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("no bucket: expected s3://bucket/prefix"));
                }
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()?;
                let prefix = prefix.trim_matches('/');
                let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                };
                Ok(ArtifactStore {
                    store,
                    location: u.to_owned(),
                })
            }
            Some(_) => Err(bad("expected s3://bucket/prefix or file:///path")),
        }
    }

    fn folder(path: &Path) -> Result<Self, ArtifactStoreError> {
        crate::private_fs::create_private_dir(path).map_err(|source| {
            ArtifactStoreError::Folder {
                path: path.to_owned(),
                source,
            }
        })?;
        Ok(ArtifactStore {
            store: Arc::new(LocalFileSystem::new_with_prefix(path)?),
            location: path.display().to_string(),
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// The object name of an artifact.
    pub fn key(task: Uuid, artifact: Uuid) -> String {
        format!("tasks/{task}/{artifact}")
    }

    /// A streamed upload to `key`: parts are sent as they fill, and nothing is visible under
    /// `key` until [`WriteMultipart::finish`] (abort it on failure).
    pub async fn writer(&self, key: &str) -> Result<WriteMultipart, ArtifactStoreError> {
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await?;
        Ok(WriteMultipart::new(upload))
    }

    /// The bytes of `key` in `range` (all of it without one), as they arrive.
    pub async fn read(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, ArtifactStoreError>>, ArtifactStoreError>
    {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..Default::default()
        };
        let got = self.store.get_opts(&ObjectPath::from(key), options).await?;
        Ok(got.into_stream().map(|r| r.map_err(Into::into)).boxed())
    }

    /// Deletes `key`; one that is already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), ArtifactStoreError> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ArtifactStoreError> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
