//! The admin plane's errors, and the one place they become gRPC statuses.

use tonic::Status;

use crate::hub::HubError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("data is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("data is {size} bytes; the limit is {limit}")]
    DataTooLarge { size: usize, limit: usize },
    #[error("invalid topic `{0}`: a topic is 1-128 characters of A-Za-z0-9_.:-")]
    InvalidTopic(String),
    #[error("kick code {0} is outside 4000-4999")]
    InvalidCode(u32),
    #[error("kick reason is {0} bytes; at most 123 are allowed")]
    ReasonTooLong(usize),
    #[error("page_size {0} is over the limit of 1000")]
    PageTooLarge(u32),
    #[error("invalid page_token")]
    InvalidPageToken,
    #[error("limit {0} is over the limit of 1000")]
    LimitTooLarge(u32),
    #[error("topic {0} keeps no history on this node (--history-size, --history-topics)")]
    NoHistory(String),
    #[error("a kick needs a target: client_id, user or topic")]
    NoTarget,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("deadline must be between 0 and 24 hours")]
    InvalidDeadline,
    #[error("client {0} not found")]
    NotFound(String),
    #[error("missing or wrong admin token")]
    Unauthenticated,
    #[error("a drain is already running")]
    DrainRunning,
    #[error("the hub is shutting down")]
    Unavailable,
    #[error("{0}")]
    Backplane(String),
    #[error("exclude_client_ids cannot be used on a topic with history in a cluster: the one numbered message goes to every node")]
    ExcludeWithHistory,
    #[error("node {0}, which holds the client, did not answer; try again")]
    NodeUnavailable(String),
    #[error("the hub did not answer within the server's deadline of {0:?}")]
    DeadlineExceeded(std::time::Duration),
}

impl From<HubError> for AdminError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::ShuttingDown | HubError::Refused(_) => AdminError::Unavailable,
            HubError::NotFound(id) => AdminError::NotFound(id.to_string()),
            HubError::Timeout(deadline) => AdminError::DeadlineExceeded(deadline),
            e @ HubError::Backplane(_) => AdminError::Backplane(e.to_string()),
        }
    }
}

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        let message = e.to_string();
        match e {
            AdminError::InvalidJson(_)
            | AdminError::DataTooLarge { .. }
            | AdminError::InvalidTopic(_)
            | AdminError::InvalidCode(_)
            | AdminError::ReasonTooLong(_)
            | AdminError::PageTooLarge(_)
            | AdminError::InvalidPageToken
            | AdminError::LimitTooLarge(_)
            | AdminError::NoTarget
            | AdminError::Missing(_)
            | AdminError::InvalidDeadline
            | AdminError::ExcludeWithHistory => Status::invalid_argument(message),
            AdminError::NotFound(_) | AdminError::NoHistory(_) => Status::not_found(message),
            AdminError::Unauthenticated => Status::unauthenticated(message),
            AdminError::DrainRunning => Status::failed_precondition(message),
            AdminError::Unavailable | AdminError::NodeUnavailable(_) | AdminError::Backplane(_) => {
                Status::unavailable(message)
            }
            AdminError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_error_maps_to_its_documented_code() {
        let cases = [
            (AdminError::InvalidJson("x".into()), Code::InvalidArgument),
            (AdminError::DataTooLarge { size: 2, limit: 1 }, Code::InvalidArgument),
            (AdminError::InvalidTopic("a b".into()), Code::InvalidArgument),
            (AdminError::InvalidCode(1000), Code::InvalidArgument),
            (AdminError::ReasonTooLong(124), Code::InvalidArgument),
            (AdminError::PageTooLarge(1001), Code::InvalidArgument),
            (AdminError::InvalidPageToken, Code::InvalidArgument),
            (AdminError::LimitTooLarge(1001), Code::InvalidArgument),
            (AdminError::NoHistory("t".into()), Code::NotFound),
            (AdminError::NoTarget, Code::InvalidArgument),
            (AdminError::ExcludeWithHistory, Code::InvalidArgument),
            (AdminError::Backplane("x".into()), Code::Unavailable),
            (AdminError::Missing("client_id"), Code::InvalidArgument),
            (AdminError::InvalidDeadline, Code::InvalidArgument),
            (AdminError::NotFound("c-1".into()), Code::NotFound),
            (AdminError::Unauthenticated, Code::Unauthenticated),
            (AdminError::DrainRunning, Code::FailedPrecondition),
            (HubError::ShuttingDown.into(), Code::Unavailable),
            (AdminError::NodeUnavailable("b".into()), Code::Unavailable),
            (
                HubError::Timeout(std::time::Duration::from_secs(5)).into(),
                Code::DeadlineExceeded,
            ),
            (HubError::NotFound(crate::hub::ClientId(7)).into(), Code::NotFound),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, message.as_str()));
        }
    }
}
