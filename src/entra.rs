//! Facts about Microsoft Entra that configuration and token validation share: the clouds
//! (where keys are fetched, which issuer forms tokens carry) and the token exchange
//! audiences no API may accept.
//!
//! Microsoft's global cloud, the US Government cloud and the China cloud (operated by
//! 21Vianet) use different hosts: `login.microsoftonline.com`, `login.microsoftonline.us` and
//! `login.chinacloudapi.cn` for OIDC discovery, and each its own v1 (`sts.*`) and v2 issuer
//! hosts. The issuer hosts can be set explicitly for any other deployment.

use serde::Deserialize;

/// An Entra cloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cloud {
    #[default]
    Public,
    UsGovernment,
    China,
}

impl Cloud {
    /// The OIDC authority keys are discovered from.
    pub fn authority(self) -> &'static str {
        match self {
            Self::Public => "https://login.microsoftonline.com",
            Self::UsGovernment => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The issuer forms of tokens this cloud signs.
    pub fn issuers(self) -> Issuers {
        let (v1, v2) = match self {
            Self::Public => ("sts.windows.net", "login.microsoftonline.com"),
            Self::UsGovernment => ("sts.windows.net", "login.microsoftonline.us"),
            Self::China => ("sts.chinacloudapi.cn", "login.partner.microsoftonline.cn"),
        };
        Issuers::new(v1, v2)
    }
}

/// The `iss` forms of v1 and v2 tokens: `https://{v1_host}/{tid}/` and
/// `https://{v2_host}/{tid}/v2.0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issuers {
    v1_host: String,
    v2_host: String,
}

impl Issuers {
    pub fn new(v1_host: &str, v2_host: &str) -> Self {
        Self {
            v1_host: v1_host.to_ascii_lowercase(),
            v2_host: v2_host.to_ascii_lowercase(),
        }
    }

    /// The v1 issuer of tenant `tid`.
    pub fn v1(&self, tid: &str) -> String {
        format!("https://{}/{tid}/", self.v1_host)
    }

    /// The v2 issuer of tenant `tid`.
    pub fn v2(&self, tid: &str) -> String {
        format!("https://{}/{tid}/v2.0", self.v2_host)
    }

    /// True when `iss` is exactly the v1 issuer of `tid`; compared without allocating, since
    /// this runs for every token verified.
    pub fn is_v1(&self, iss: &str, tid: &str) -> bool {
        iss.strip_prefix("https://")
            .and_then(|r| r.strip_prefix(self.v1_host.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(tid))
            == Some("/")
    }

    /// True when `iss` is exactly the v2 issuer of `tid`.
    pub fn is_v2(&self, iss: &str, tid: &str) -> bool {
        iss.strip_prefix("https://")
            .and_then(|r| r.strip_prefix(self.v2_host.as_str()))
            .and_then(|r| r.strip_prefix('/'))
            .and_then(|r| r.strip_prefix(tid))
            == Some("/v2.0")
    }
}

impl Default for Issuers {
    fn default() -> Self {
        Cloud::Public.issuers()
    }
}

/// The audiences of Entra's token exchange endpoint in every cloud, as an application id
/// and as App ID URIs. Blueprint and agent exchange tokens carry one; no API may accept them.
pub const EXCHANGE_AUDIENCES: &[&str] = &[
    "fb60f99c-7a34-4190-8149-302f77469936",
    "api://AzureADTokenExchange",
    "api://AzureADTokenExchangeUSGov",
    "api://AzureADTokenExchangeChina",
];

/// True when `aud` (any case, a trailing slash ignored) is a token exchange audience.
pub fn is_exchange_audience(aud: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    EXCHANGE_AUDIENCES
        .iter()
        .any(|a| a.eq_ignore_ascii_case(aud))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "aaaaaaaa-1111-1111-1111-000000000001";

    #[test]
    fn issuer_forms_match_exactly_per_cloud() {
        let public = Cloud::Public.issuers();
        assert!(public.is_v1(&format!("https://sts.windows.net/{TID}/"), TID));
        assert!(public.is_v2(
            &format!("https://login.microsoftonline.com/{TID}/v2.0"),
            TID
        ));
        assert!(!public.is_v1(&format!("https://sts.windows.net/{TID}"), TID));
        assert!(!public.is_v1(&format!("http://sts.windows.net/{TID}/"), TID));
        assert!(!public.is_v2(&format!("https://login.microsoftonline.us/{TID}/v2.0"), TID));
        assert!(!public.is_v2(
            &format!("https://login.microsoftonline.com/{TID}/v2.0/"),
            TID
        ));
        let gov = Cloud::UsGovernment.issuers();
        assert!(gov.is_v2(&format!("https://login.microsoftonline.us/{TID}/v2.0"), TID));
        assert!(gov.is_v1(&format!("https://sts.windows.net/{TID}/"), TID));
        let china = Cloud::China.issuers();
        assert!(china.is_v1(&format!("https://sts.chinacloudapi.cn/{TID}/"), TID));
        assert!(china.is_v2(
            &format!("https://login.partner.microsoftonline.cn/{TID}/v2.0"),
            TID
        ));
        assert_eq!(public.v1(TID), format!("https://sts.windows.net/{TID}/"));
        for iss in [public.v1(TID), public.v2(TID)] {
            assert!(public.is_v1(&iss, TID) != public.is_v2(&iss, TID));
        }
    }

    #[test]
    fn every_form_of_the_exchange_audience_is_recognised() {
        for aud in [
            "fb60f99c-7a34-4190-8149-302f77469936",
            "FB60F99C-7A34-4190-8149-302F77469936/",
            "api://AzureADTokenExchange",
            "api://azureadtokenexchange/",
            "api://AzureADTokenExchangeUSGov",
            "api://AzureADTokenExchangeChina",
        ] {
            assert!(is_exchange_audience(aud), "{aud}");
        }
        assert!(!is_exchange_audience(
            "api://bbbbbbbb-2222-2222-2222-000000000001"
        ));
        assert!(!is_exchange_audience("api://AzureADTokenExchangeX"));
    }
}
