//! HTTP/2 settings from Envoy's `Http2ProtocolOptions`, for either side of the proxy: a
//! cluster's upstream connections and a connection manager's downstream ones. The fields Weir
//! honours are checked against Envoy's ranges; any other field set is refused by name.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;

use crate::convert::opt_duration;

/// The HTTP/2 settings Weir honours. `None` leaves hyper's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Http2Settings {
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`: streams a connection carries at once.
    pub max_concurrent_streams: Option<u32>,
    /// `SETTINGS_INITIAL_WINDOW_SIZE`: a stream's flow-control window, in bytes.
    pub initial_stream_window: Option<u32>,
    /// The connection's flow-control window, in bytes.
    pub initial_connection_window: Option<u32>,
    /// PING keepalive: the interval between PINGs and how long an answer may take.
    pub keepalive: Option<(Duration, Duration)>,
}

/// Envoy's bounds (`validate.rules` of `Http2ProtocolOptions`).
const MAX_STREAMS: u32 = 2_147_483_647;
const MIN_WINDOW: u32 = 65_535;
const MAX_WINDOW: u32 = 2_147_483_647;
/// Weir's bound on keepalive durations (tokio's timers take any, a day is plenty).
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Http2Settings {
    /// Compiles `h2`, found at `at` (the field path used in errors, such as
    /// `http2_protocol_options`).
    #[allow(deprecated)]
    pub fn compile(h2: &Http2ProtocolOptions, at: &str) -> Result<Self, String> {
        let unsupported = [
            (h2.hpack_table_size.is_some(), "hpack_table_size"),
            (h2.allow_connect, "allow_connect"),
            (h2.allow_metadata, "allow_metadata"),
            (h2.max_outbound_frames.is_some(), "max_outbound_frames"),
            (
                h2.max_outbound_control_frames.is_some(),
                "max_outbound_control_frames",
            ),
            (
                h2.max_consecutive_inbound_frames_with_empty_payload.is_some(),
                "max_consecutive_inbound_frames_with_empty_payload",
            ),
            (
                h2.max_inbound_priority_frames_per_stream.is_some(),
                "max_inbound_priority_frames_per_stream",
            ),
            (
                h2.max_inbound_window_update_frames_per_data_frame_sent.is_some(),
                "max_inbound_window_update_frames_per_data_frame_sent",
            ),
            (
                h2.stream_error_on_invalid_http_messaging,
                "stream_error_on_invalid_http_messaging",
            ),
            (
                h2.override_stream_error_on_invalid_http_message.is_some(),
                "override_stream_error_on_invalid_http_message",
            ),
            (
                !h2.custom_settings_parameters.is_empty(),
                "custom_settings_parameters",
            ),
            (h2.use_oghttp2_codec.is_some(), "use_oghttp2_codec"),
            (h2.max_metadata_size.is_some(), "max_metadata_size"),
            (h2.enable_huffman_encoding.is_some(), "enable_huffman_encoding"),
            (h2.max_header_field_size_kb.is_some(), "max_header_field_size_kb"),
            (h2.disallow_obs_text.is_some(), "disallow_obs_text"),
            (h2.stream_reset_burst.is_some(), "stream_reset_burst"),
            (h2.stream_reset_rate.is_some(), "stream_reset_rate"),
        ];
        if let Some((_, field)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("{at}.{field} is not supported"));
        }
        // A field this list does not know yet (the fields test names them).
        let known = Http2ProtocolOptions {
            max_concurrent_streams: h2.max_concurrent_streams,
            initial_stream_window_size: h2.initial_stream_window_size,
            initial_connection_window_size: h2.initial_connection_window_size,
            connection_keepalive: h2.connection_keepalive,
            ..Http2ProtocolOptions::default()
        };
        if *h2 != known {
            return Err(format!(
                "{at}: only max_concurrent_streams, the initial window sizes and connection_keepalive are supported"
            ));
        }
        let ranged = |value: Option<u32>, field: &str, min: u32, max: u32| match value {
            Some(v) if !(min..=max).contains(&v) => {
                Err(format!("{at}.{field}: value must be inside range [{min}, {max}]"))
            }
            v => Ok(v),
        };
        let keepalive = match &h2.connection_keepalive {
            None => None,
            Some(k) => {
                let field = format!("{at}.connection_keepalive");
                if k.interval_jitter.is_some() || k.connection_idle_interval.is_some() {
                    return Err(format!(
                        "{field}: interval_jitter and connection_idle_interval are not supported"
                    ));
                }
                let interval = opt_duration(k.interval.as_ref(), &format!("{field}.interval"))?;
                let timeout = opt_duration(k.timeout.as_ref(), &format!("{field}.timeout"))?
                    .ok_or_else(|| format!("{field}.timeout is required"))?;
                if timeout < Duration::from_millis(1) {
                    return Err(format!("{field}.timeout must be at least 1ms"));
                }
                if interval.is_some_and(|i| i > DAY) || timeout > DAY {
                    return Err(format!("{field}: interval and timeout must be at most a day"));
                }
                // No interval: no PINGs (Envoy).
                interval.filter(|i| !i.is_zero()).map(|i| (i, timeout))
            }
        };
        Ok(Http2Settings {
            max_concurrent_streams: ranged(
                h2.max_concurrent_streams.as_ref().map(|v| v.value),
                "max_concurrent_streams",
                1,
                MAX_STREAMS,
            )?,
            initial_stream_window: ranged(
                h2.initial_stream_window_size.as_ref().map(|v| v.value),
                "initial_stream_window_size",
                MIN_WINDOW,
                MAX_WINDOW,
            )?,
            initial_connection_window: ranged(
                h2.initial_connection_window_size.as_ref().map(|v| v.value),
                "initial_connection_window_size",
                MIN_WINDOW,
                MAX_WINDOW,
            )?,
            keepalive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::KeepaliveSettings;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    fn secs(s: i64) -> Option<PbDuration> {
        Some(PbDuration { seconds: s, nanos: 0 })
    }

    #[test]
    fn the_honoured_settings_are_read_within_envoys_ranges() {
        let h2 = Http2ProtocolOptions {
            max_concurrent_streams: Some(UInt32Value { value: 100 }),
            initial_stream_window_size: Some(UInt32Value { value: 65_536 }),
            initial_connection_window_size: Some(UInt32Value { value: 1_048_576 }),
            connection_keepalive: Some(KeepaliveSettings {
                interval: secs(20),
                timeout: secs(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            Http2Settings::compile(&h2, "h2"),
            Ok(Http2Settings {
                max_concurrent_streams: Some(100),
                initial_stream_window: Some(65_536),
                initial_connection_window: Some(1_048_576),
                keepalive: Some((Duration::from_secs(20), Duration::from_secs(5))),
            })
        );
        assert_eq!(
            Http2Settings::compile(&Http2ProtocolOptions::default(), "h2"),
            Ok(Http2Settings::default())
        );
    }

    #[test]
    fn values_outside_envoys_ranges_and_other_fields_are_refused_by_name() {
        let refused = |h2: Http2ProtocolOptions| Http2Settings::compile(&h2, "h2").unwrap_err();
        let e = refused(Http2ProtocolOptions {
            max_concurrent_streams: Some(UInt32Value { value: 0 }),
            ..Default::default()
        });
        assert_eq!(
            e,
            "h2.max_concurrent_streams: value must be inside range [1, 2147483647]"
        );
        let e = refused(Http2ProtocolOptions {
            initial_stream_window_size: Some(UInt32Value { value: 1024 }),
            ..Default::default()
        });
        assert_eq!(
            e,
            "h2.initial_stream_window_size: value must be inside range [65535, 2147483647]"
        );
        let e = refused(Http2ProtocolOptions {
            initial_connection_window_size: Some(UInt32Value { value: u32::MAX }),
            ..Default::default()
        });
        assert!(e.starts_with("h2.initial_connection_window_size"), "{e}");
        let e = refused(Http2ProtocolOptions {
            hpack_table_size: Some(UInt32Value { value: 0 }),
            ..Default::default()
        });
        assert_eq!(e, "h2.hpack_table_size is not supported");
        let e = refused(Http2ProtocolOptions {
            connection_keepalive: Some(KeepaliveSettings {
                interval: secs(1),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(e, "h2.connection_keepalive.timeout is required");
        let e = refused(Http2ProtocolOptions {
            connection_keepalive: Some(KeepaliveSettings {
                interval: secs(-1),
                timeout: secs(1),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(e.contains("connection_keepalive.interval"), "{e}");
    }

    #[test]
    fn a_keepalive_without_an_interval_sends_no_pings() {
        let h2 = Http2ProtocolOptions {
            connection_keepalive: Some(KeepaliveSettings {
                timeout: secs(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Http2Settings::compile(&h2, "h2").unwrap().keepalive, None);
    }
}
