//! The front-end's byte budget for image data it holds: bodies being received, images
//! waiting in the queue and images with the dispatcher.
//!
//! Counting images alone bounds nothing in bytes (`max_queued` 20 MiB images is 10 GiB), so
//! every byte a request body brings in is taken from this budget as it arrives, before it is
//! buffered, and stays taken until the image it belongs to has its answer. When the budget
//! is spent the request is refused at once with 503 and `Retry-After`, instead of waiting
//! while holding memory. Bytes a request read but does not keep (multipart framing, a file
//! that is not an image) are given back as soon as the body is parsed.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of image data the front-end may hold at once.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    total: usize,
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
#[derive(Debug)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl ByteBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> ByteBudget {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        ByteBudget {
            sem: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Take `n` more bytes into `held`, or `false` when the budget has no room (then `held`
    /// is unchanged; the caller refuses the request and drops what it holds).
    pub fn take(&self, held: &mut Held, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        match self.sem.clone().try_acquire_many_owned(n32) {
            Ok(p) => {
                match &mut held.0 {
                    Some(h) => h.merge(p),
                    None => held.0 = Some(p),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// `n` bytes for one image of a request that has already paid for its whole body:
    /// moved out of `paid` as far as it holds them, the rest taken anew; `None` when the
    /// budget has no room for the rest. What `paid` keeps (framing around the images) goes
    /// back when the request drops it.
    pub fn claim(&self, paid: &mut Held, n: usize) -> Option<Held> {
        let mut held = paid.split(n);
        let short = n - held.len();
        self.take(&mut held, short).then_some(held)
    }

    /// Bytes held now, over all requests.
    pub fn in_use(&self) -> usize {
        self.total - self.sem.available_permits()
    }

    /// The budget's size.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Held {
    /// Nothing held.
    pub fn none() -> Held {
        Held(None)
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Move `n` of the held bytes into a holding of their own (one per image), or as many as
    /// are left.
    pub fn split(&mut self, n: usize) -> Held {
        let n = n.min(self.len());
        if n == 0 {
            return Held(None);
        }
        Held(self.0.as_mut().and_then(|p| p.split(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_all_or_nothing_and_given_back() {
        let b = ByteBudget::new(100);
        let mut req = Held::none();
        assert!(b.take(&mut req, 60));
        assert!(b.take(&mut req, 30));
        let mut other = Held::none();
        assert!(!b.take(&mut other, 20), "only 10 left");
        assert!(other.is_empty());
        assert_eq!(b.in_use(), 90);
        let image = req.split(50);
        assert_eq!((image.len(), req.len()), (50, 40));
        drop(req);
        assert_eq!(b.in_use(), 50, "framing bytes go back, the image's stay");
        drop(image);
        assert_eq!(b.in_use(), 0);
        let mut huge = Held::none();
        assert!(!b.take(&mut huge, usize::MAX));
    }

    #[test]
    fn a_paid_body_hands_its_bytes_to_its_images() {
        let b = ByteBudget::new(100);
        let mut paid = Held::none();
        assert!(b.take(&mut paid, 30));
        let image = b.claim(&mut paid, 20).unwrap();
        assert_eq!((image.len(), paid.len(), b.in_use()), (20, 10, 30));
        let topped_up = b.claim(&mut paid, 15).unwrap();
        assert_eq!((topped_up.len(), paid.len(), b.in_use()), (15, 0, 35));
        assert!(b.claim(&mut paid, 70).is_none(), "only 65 left");
        assert_eq!(b.in_use(), 35);
    }
}
