package sshdconfig

// Where a keyword may appear, as in sshd's keyword table.
const (
	cfgGlobal = 1 << iota // the main section
	cfgMatch              // inside a Match block
	cfgAll    = cfgGlobal | cfgMatch
)

// knownKeywords is every keyword OpenSSH 8.9/9.2 (Debian and Ubuntu
// builds: PAM, GSSAPI with key exchange, Kerberos) accepts, with where it
// may appear. Keywords this package models are handled in apply; the rest
// are accepted and ignored, as only their placement can be checked.
var knownKeywords = map[string]int{
	"usepam": cfgGlobal, "pamauthenticationviakbdint": cfgGlobal,
	"port": cfgGlobal, "hostkey": cfgGlobal, "hostdsakey": cfgGlobal, "hostkeyagent": cfgGlobal,
	"pidfile": cfgGlobal, "modulifile": cfgGlobal, "serverkeybits": cfgGlobal, "logingracetime": cfgGlobal,
	"keyregenerationinterval": cfgGlobal, "permitrootlogin": cfgAll, "syslogfacility": cfgGlobal,
	"loglevel": cfgAll, "logverbose": cfgAll, "rhostsauthentication": cfgGlobal, "rhostsrsaauthentication": cfgAll,
	"hostbasedauthentication": cfgAll, "hostbasedusesnamefrompacketonly": cfgAll,
	"hostbasedacceptedalgorithms": cfgAll, "hostbasedacceptedkeytypes": cfgAll, "hostkeyalgorithms": cfgGlobal,
	"rsaauthentication": cfgAll, "pubkeyauthentication": cfgAll, "pubkeyacceptedalgorithms": cfgAll,
	"pubkeyacceptedkeytypes": cfgAll, "pubkeyauthoptions": cfgAll, "dsaauthentication": cfgGlobal,
	"kerberosauthentication": cfgAll, "kerberosorlocalpasswd": cfgGlobal, "kerberosticketcleanup": cfgGlobal,
	"kerberosgetafstoken": cfgGlobal, "kerberostgtpassing": cfgGlobal, "afstokenpassing": cfgGlobal,
	"gssapiauthentication": cfgAll, "gssapicleanupcredentials": cfgGlobal, "gssapistrictacceptorcheck": cfgGlobal,
	"gssapikeyexchange": cfgGlobal, "gssapistorecredentialsonrekey": cfgGlobal, "gssapikexalgorithms": cfgGlobal,
	"passwordauthentication": cfgAll, "kbdinteractiveauthentication": cfgAll,
	"challengeresponseauthentication": cfgAll, "skeyauthentication": cfgAll, "checkmail": cfgGlobal,
	"listenaddress": cfgGlobal, "addressfamily": cfgGlobal, "printmotd": cfgGlobal, "printlastlog": cfgGlobal,
	"ignorerhosts": cfgAll, "ignoreuserknownhosts": cfgGlobal, "x11forwarding": cfgAll,
	"x11displayoffset": cfgAll, "x11uselocalhost": cfgAll, "xauthlocation": cfgGlobal, "strictmodes": cfgGlobal,
	"permitemptypasswords": cfgAll, "permituserenvironment": cfgGlobal, "uselogin": cfgGlobal,
	"compression": cfgGlobal, "rekeylimit": cfgAll, "tcpkeepalive": cfgGlobal, "keepalive": cfgGlobal,
	"allowtcpforwarding": cfgAll, "allowagentforwarding": cfgAll, "allowusers": cfgAll, "denyusers": cfgAll,
	"allowgroups": cfgAll, "denygroups": cfgAll, "ciphers": cfgGlobal, "macs": cfgGlobal, "protocol": cfgGlobal,
	"gatewayports": cfgAll, "subsystem": cfgGlobal, "maxstartups": cfgGlobal, "persourcemaxstartups": cfgGlobal,
	"persourcenetblocksize": cfgGlobal, "maxauthtries": cfgAll, "maxsessions": cfgAll, "banner": cfgAll,
	"usedns": cfgGlobal, "verifyreversemapping": cfgGlobal, "reversemappingcheck": cfgGlobal,
	"clientaliveinterval": cfgAll, "clientalivecountmax": cfgAll, "authorizedkeysfile": cfgAll,
	"authorizedkeysfile2": cfgAll, "useprivilegeseparation": cfgGlobal, "acceptenv": cfgAll, "setenv": cfgAll,
	"permittunnel": cfgAll, "permittty": cfgAll, "permituserrc": cfgAll, "match": cfgAll, "permitopen": cfgAll,
	"permitlisten": cfgAll, "forcecommand": cfgAll, "chrootdirectory": cfgAll, "hostcertificate": cfgGlobal,
	"revokedkeys": cfgAll, "trustedusercakeys": cfgAll, "authorizedprincipalsfile": cfgAll,
	"kexalgorithms": cfgGlobal, "include": cfgAll, "ipqos": cfgAll, "authorizedkeyscommand": cfgAll,
	"authorizedkeyscommanduser": cfgAll, "authorizedprincipalscommand": cfgAll,
	"authorizedprincipalscommanduser": cfgAll, "versionaddendum": cfgGlobal, "authenticationmethods": cfgAll,
	"streamlocalbindmask": cfgAll, "streamlocalbindunlink": cfgAll, "allowstreamlocalforwarding": cfgAll,
	"fingerprinthash": cfgGlobal, "disableforwarding": cfgAll, "exposeauthinfo": cfgAll, "rdomain": cfgAll,
	"casignaturealgorithms": cfgAll, "securitykeyprovider": cfgGlobal, "debianbanner": cfgGlobal,
}

// Keywords added after 8.9, known only to the versions that have them.
var laterKeywords = map[string]struct {
	flags int
	since int // version * 10, e.g. 91 for 9.1
}{
	"requiredrsasize":         {cfgAll, 91},
	"channeltimeout":          {cfgAll, 92},
	"unusedconnectiontimeout": {cfgAll, 92},
}

// Keywords are the keywords this package computes and prints, in the order
// `sshd -T` prints them.
var Keywords = []string{
	"port", "addressfamily", "listenaddress", "usepam", "logingracetime", "maxauthtries",
	"clientaliveinterval", "permitrootlogin", "pubkeyauthentication", "passwordauthentication",
	"kbdinteractiveauthentication", "x11forwarding", "permitemptypasswords", "allowtcpforwarding",
	"allowagentforwarding", "disableforwarding", "ciphers", "macs", "authorizedkeyscommand",
	"authorizedkeyscommanduser", "kexalgorithms", "loglevel", "authorizedkeysfile", "allowusers",
	"denyusers", "allowgroups", "denygroups", "permittunnel",
}

// aliases maps a keyword to the option it sets.
var aliases = map[string]string{
	"challengeresponseauthentication": "kbdinteractiveauthentication",
	"skeyauthentication":              "kbdinteractiveauthentication",
	"dsaauthentication":               "pubkeyauthentication",
}

// matchCopied are the modelled options a Match block can change; sshd
// copies exactly these from the Match pass into the effective config.
var matchCopied = map[string]bool{
	"passwordauthentication": true, "pubkeyauthentication": true, "kbdinteractiveauthentication": true,
	"permitrootlogin": true, "permitemptypasswords": true, "allowtcpforwarding": true,
	"allowagentforwarding": true, "disableforwarding": true, "permittunnel": true, "x11forwarding": true,
	"maxauthtries": true, "clientaliveinterval": true, "loglevel": true, "authorizedkeyscommand": true,
	"authorizedkeyscommanduser": true, "authorizedkeysfile": true, "allowusers": true, "denyusers": true,
	"allowgroups": true, "denygroups": true,
}
