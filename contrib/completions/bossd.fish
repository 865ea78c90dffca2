# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_bossd_global_optspecs
    string join \n join= rule= priority= quorum= strict no-preempt preempt-delay= heartbeat= timeout= reconnect-timeout= secret-file= state-dir= notify= check= check-interval= check-timeout= check-fall= check-rise= max-conns= log= no-console h/help V/version
end

function __fish_bossd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_bossd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_bossd_using_subcommand
    set -l cmd (__fish_bossd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c bossd -n "__fish_bossd_needs_command" -l join -d 'Peer to join at start, IP:PORT or [IPv6]:PORT; repeatable. Retried with backoff until reached; a target that does not answer is logged once as a warning (event=join-failed), and again when it does (event=join-reached). Default: none (wait to be joined)' -r
complete -c bossd -n "__fish_bossd_needs_command" -l rule -d 'Election rule: a comma list of oldest, youngest, priority (higher wins), lowest-addr, highest-addr, applied in order, each at most once; ties go to the lowest address, then the instance id. Must match across the cluster' -r
complete -c bossd -n "__fish_bossd_needs_command" -l priority -d 'This node\'s priority, for the `priority` rule (signed 32-bit)' -r
complete -c bossd -n "__fish_bossd_needs_command" -l quorum -d 'Fewest members, this node included, a group needs to hold a master. Must match across the cluster' -r
complete -c bossd -n "__fish_bossd_needs_command" -l preempt-delay -d 'A member that ranks before the master takes over only after it has been eligible and in the group this long, in milliseconds (a flapping service does not drag the role along), up to one day. Must match across the cluster' -r
complete -c bossd -n "__fish_bossd_needs_command" -l heartbeat -d 'Interval between heartbeats, in milliseconds: master and followers each round; followers among themselves every round only while the master cannot vouch for them, else once in 50 rounds' -r
complete -c bossd -n "__fish_bossd_needs_command" -l timeout -d 'A peer not heard from for this long is dead, in milliseconds; must exceed 2 x heartbeat' -r
complete -c bossd -n "__fish_bossd_needs_command" -l reconnect-timeout -d 'How long a peer lost without leaving is retried, in milliseconds, counted from when it was last connected; then it is forgotten with one log line (and joins as a newcomer if it comes back). --join targets are retried for ever. Must be at least --timeout. The default, one day (as Serf\'s reconnect_timeout; Consul uses 72 h), outlasts a reboot, a maintenance window or a night\'s outage, and keeps no more than a day of replaced hosts (autoscaling, containers) being redialled; -forget drops one at once' -r
complete -c bossd -n "__fish_bossd_needs_command" -l secret-file -d 'File holding the shared cluster secret (trailing newlines ignored; keep it mode 600). Peers must prove they know it before they join, every peer line is then authenticated, and only console clients that authenticated (`bossd ctl --secret-file`) may run mutating commands. Use at least 16 random bytes (head -c 32 /dev/urandom | base64): one recorded handshake lets anyone test guesses offline, and a shorter secret warns at start. Default: none (anyone who reaches the port may join)' -r -F
complete -c bossd -n "__fish_bossd_needs_command" -l state-dir -d 'Keep the highest epoch this node has seen in DIR, so that epochs never go back, even when every node restarts at once. Default: none' -r -f -a "(__fish_complete_directories)"
complete -c bossd -n "__fish_bossd_needs_command" -l notify -d 'Shell command run with `sh -c` on every role change, one at a time and in order; killed after 30 s. Default: none' -r -f -a "(__fish_complete_command)"
complete -c bossd -n "__fish_bossd_needs_command" -l check -d 'Health check: shell command run with `sh -c` at start and then every --check-interval; exit status 0 passes. Default: none (always healthy)' -r -f -a "(__fish_complete_command)"
complete -c bossd -n "__fish_bossd_needs_command" -l check-interval -d 'Time between the starts of two checks, in milliseconds (10 to one day). A check that runs longer delays the next one: checks never overlap. Needs --check, as do the three below' -r
complete -c bossd -n "__fish_bossd_needs_command" -l check-timeout -d 'A check still running after this many milliseconds is killed with its process group and counts as a failure (1 to one day). Default: --check-interval' -r
complete -c bossd -n "__fish_bossd_needs_command" -l check-fall -d 'Consecutive failed checks that make a healthy node failing (1 to 100). A failure is seen after about fall x interval' -r
complete -c bossd -n "__fish_bossd_needs_command" -l check-rise -d 'Consecutive passed checks that make a failing node healthy again (1 to 100); the first pass after start is enough, whatever N' -r
complete -c bossd -n "__fish_bossd_needs_command" -l max-conns -d 'Most open connections, peers and console clients together' -r
complete -c bossd -n "__fish_bossd_needs_command" -l log -d 'Log level on stderr: error, warn, info or debug' -r
complete -c bossd -n "__fish_bossd_needs_command" -l strict -d 'Never two masters at once (with a quorum above half the cluster): a new master waits out the old one\'s lease, so a crash fails over in about --timeout. Must match across the cluster. Default: off'
complete -c bossd -n "__fish_bossd_needs_command" -l no-preempt -d 'An eligible master keeps its role when a member that ranks before it joins, restarts or becomes eligible: the role moves only when the master fails, leaves, becomes ineligible or hands over (-handover). Must match across the cluster. Default: off'
complete -c bossd -n "__fish_bossd_needs_command" -l no-console -d 'Do not read console commands from stdin. Default: off (stdin is a console)'
complete -c bossd -n "__fish_bossd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bossd -n "__fish_bossd_needs_command" -s V -l version -d 'Print version'
complete -c bossd -n "__fish_bossd_needs_command" -a "ctl" -d 'Send one console command to a node and print its answer'
complete -c bossd -n "__fish_bossd_needs_command" -a "demo" -d 'Start a cluster on this machine, kill its master, and time the failover'
complete -c bossd -n "__fish_bossd_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c bossd -n "__fish_bossd_using_subcommand ctl" -l secret-file -d 'File holding the shared cluster secret, to run mutating commands. Before IP, or right after PORT' -r -F
complete -c bossd -n "__fish_bossd_using_subcommand ctl" -s h -l help -d 'Print help'
complete -c bossd -n "__fish_bossd_using_subcommand ctl" -s V -l version -d 'Print version'
complete -c bossd -n "__fish_bossd_using_subcommand demo" -s h -l help -d 'Print help'
complete -c bossd -n "__fish_bossd_using_subcommand demo" -s V -l version -d 'Print version'
complete -c bossd -n "__fish_bossd_using_subcommand help; and not __fish_seen_subcommand_from ctl demo help" -f -a "ctl" -d 'Send one console command to a node and print its answer'
complete -c bossd -n "__fish_bossd_using_subcommand help; and not __fish_seen_subcommand_from ctl demo help" -f -a "demo" -d 'Start a cluster on this machine, kill its master, and time the failover'
complete -c bossd -n "__fish_bossd_using_subcommand help; and not __fish_seen_subcommand_from ctl demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
