//! Walking a paginated list page by page, item by item, or as a `Stream`.

use std::collections::VecDeque;

use futures::Stream;
use serde::de::DeserializeOwned;

use crate::client::Client;
use crate::error::ClientError;

/// Every item of a list, fetched a page at a time as they are consumed (from
/// [`Client::pages`]). Follows `next_cursor` until the server says there is no more.
pub struct Pages<T> {
    client: Client,
    path: Vec<String>,
    filters: Vec<(&'static str, String)>,
    cursor_param: &'static str,
    next: Option<String>,
    finished: bool,
    buffered: VecDeque<T>,
}

impl<T: DeserializeOwned> Pages<T> {
    pub(crate) fn new(
        client: Client,
        path: Vec<String>,
        filters: Vec<(&'static str, String)>,
        cursor_param: &'static str,
        start: Option<String>,
    ) -> Self {
        Self {
            client,
            path,
            filters,
            cursor_param,
            next: start,
            finished: false,
            buffered: VecDeque::new(),
        }
    }

    /// The next page's items (possibly empty), or `None` after the last page. Items taken
    /// one by one with [`Pages::try_next`] but not yet returned come first.
    pub async fn next_page(&mut self) -> Result<Option<Vec<T>>, ClientError> {
        if !self.buffered.is_empty() {
            return Ok(Some(self.buffered.drain(..).collect()));
        }
        if self.finished {
            return Ok(None);
        }
        let page = self
            .client
            .page::<T>(
                &self.path,
                &self.filters,
                self.cursor_param,
                self.next.as_deref(),
            )
            .await?;
        // A cursor that does not move would loop for ever; treat it as the end.
        self.finished = page.next_cursor.is_none() || page.next_cursor == self.next;
        self.next = page.next_cursor;
        Ok(Some(page.items))
    }

    /// The next item, fetching the next page when the current one is used up; `None` at the
    /// end of the list.
    pub async fn try_next(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            if let Some(item) = self.buffered.pop_front() {
                return Ok(Some(item));
            }
            match self.next_page().await? {
                Some(items) => self.buffered.extend(items),
                None => return Ok(None),
            }
        }
    }

    /// Every remaining item. Mind the size of the list: this holds it all in memory.
    pub async fn collect_all(mut self) -> Result<Vec<T>, ClientError> {
        let mut all = Vec::new();
        while let Some(items) = self.next_page().await? {
            all.extend(items);
        }
        Ok(all)
    }

    /// The remaining items as a `futures::Stream` (for `StreamExt`/`TryStreamExt` adapters).
    pub fn into_stream(self) -> impl Stream<Item = Result<T, ClientError>> + Send
    where
        T: Send + 'static,
    {
        futures::stream::try_unfold(self, |mut pages| async move {
            Ok(pages.try_next().await?.map(|item| (item, pages)))
        })
    }
}

impl<T> std::fmt::Debug for Pages<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pages")
            .field("path", &self.path)
            .field("next", &self.next)
            .field("finished", &self.finished)
            .field("buffered", &self.buffered.len())
            .finish()
    }
}
