//! Listing clients across the cluster: merging the nodes' pages in one
//! order, and cursors that say where a walk stands on every node.

use super::*;

impl Cluster {
    /// A page of clients across the cluster. The order is the single
    /// node's, extended with the node id: in connection order by (node,
    /// connection order); deepest queue first by (depth, node, id). The
    /// cursor names the node and its position, so a walk is as stable as
    /// on one node however clients come and go.
    pub async fn list(
        &self,
        query: ListQuery,
        after: Option<ClusterCursor>,
    ) -> Result<Gathered<ClusterPage>, HubError> {
        let size = query.page_size.max(1);
        let gathered = self
            .gather(None, |node| {
                Op::List(ListQuery {
                    cursor: after.as_ref().map(|after| local_cursor(after, node)),
                    ..query.clone()
                })
            })
            .await?;
        let order = query.order;
        Ok(gathered.map(|answers| {
            let mut total = 0;
            let mut more = false;
            let mut all: Vec<(NodeId, ClientInfo)> = Vec::new();
            for (node, answer, _) in answers {
                if let Answer::Page(page) = answer {
                    total += page.total;
                    more |= page.next.is_some();
                    all.extend(page.clients.into_iter().map(|c| (node.clone(), c)));
                }
            }
            match order {
                Order::ConnectedAt => all.sort_by(|a, b| (&a.0, a.1.id).cmp(&(&b.0, b.1.id))),
                Order::QueueDepth => all.sort_by(|a, b| {
                    (std::cmp::Reverse(a.1.queue_depth), &a.0, a.1.id).cmp(&(
                        std::cmp::Reverse(b.1.queue_depth),
                        &b.0,
                        b.1.id,
                    ))
                }),
            }
            more |= all.len() > size;
            all.truncate(size);
            let next = match (more, all.last()) {
                (true, Some((node, last))) => Some(ClusterCursor {
                    node: node.clone(),
                    cursor: match order {
                        Order::ConnectedAt => Cursor::After(last.id),
                        Order::QueueDepth => Cursor::AfterDepth(last.queue_depth, last.id),
                    },
                }),
                _ => None,
            };
            ClusterPage {
                clients: all,
                next,
                total,
            }
        }))
    }
}

/// Where a cluster-wide cursor leaves `node`'s own listing: nodes before
/// the cursor's node have shown everything at the cursor's position, nodes
/// after it nothing.
pub(super) fn local_cursor(after: &ClusterCursor, node: &NodeId) -> Cursor {
    use std::cmp::Ordering::*;
    match (after.cursor, node.cmp(&after.node)) {
        (cursor, Equal) => cursor,
        (Cursor::After(_), Less) => Cursor::After(ClientId(u64::MAX)),
        (Cursor::After(_), Greater) => Cursor::After(ClientId(0)),
        (Cursor::AfterDepth(depth, _), Less) => Cursor::AfterDepth(depth, ClientId(u64::MAX)),
        (Cursor::AfterDepth(depth, _), Greater) => Cursor::AfterDepth(depth, ClientId(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_cursors_split_the_cluster_order() {
        let b = NodeId::parse("b").unwrap();
        let after = ClusterCursor {
            node: b.clone(),
            cursor: Cursor::After(ClientId(5)),
        };
        assert_eq!(local_cursor(&after, &b), Cursor::After(ClientId(5)));
        assert_eq!(
            local_cursor(&after, &NodeId::parse("a").unwrap()),
            Cursor::After(ClientId(u64::MAX))
        );
        assert_eq!(
            local_cursor(&after, &NodeId::parse("c").unwrap()),
            Cursor::After(ClientId(0))
        );
        let deep = ClusterCursor {
            node: b,
            cursor: Cursor::AfterDepth(3, ClientId(5)),
        };
        assert_eq!(
            local_cursor(&deep, &NodeId::parse("c").unwrap()),
            Cursor::AfterDepth(3, ClientId(0))
        );
    }
}
