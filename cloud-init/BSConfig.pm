#
# OBS backend configuration, rendered by obs-farm (cloud-init/BSConfig.pm).
# Markers (two @ signs around a NAME) are replaced at render time.
#
package BSConfig;

# Workers and the frontend reach the backend at the server's static private
# address: it routes from every farm subnet (and, over the site-to-site link,
# from other clouds), where a host name would need DNS in each of them.
my $hostname = '@@SERVER_ADDRESS@@';

# The backend has no authentication. Only the peer address decides: the
# server itself (on the appliance, its API and web UI too) may write; the farm's worker subnets may deliver build results; nobody else is
# listed, so everybody else is refused. BSStdServer anchors each pattern at
# both ends itself (/^$re$/).
our $ipaccess = {
   '127\..*' => 'rw',
   '::1' => 'rw',
   '@@SERVER_ADDRESS_RE@@' => 'rw',
};

# The worker ranges follow the farm's worker pools, so they live apart from
# this file: obs-farm-apply-farm writes them (a hash of pattern => 'worker')
# to farm.pm with a VM run command, and changing the workers never changes
# the server's custom data.
my $farm = '@@FARM_PM@@';
if (-r $farm) {
  my $workers = do $farm;
  die("$farm: $@") if $@;
  $ipaccess->{$_} = $workers->{$_} for keys %{$workers || {}};
}

our $srcserver = "http://$hostname:5352";
our $reposerver = "http://$hostname:5252";
our $serviceserver = "http://127.0.0.1:5152";
our $servicedir = "/usr/lib/obs/service/";

our $bsdir = '@@BSDIR@@';
our $bsuser = 'obsrun';
our $bsgroup = 'obsrun';
our $bsserviceuser = 'obsservicerun';
our $bsservicegroup = $bsgroup;
our $rundir = "$bsdir/run";
our $logdir = "$bsdir/log";

our $nosharedtrees = 2;
our $packtrack = [];
our $relsync_pool = {
 "local" => "local",
 "i586" => "i586",
 "x86_64" => "i586",
 "aarch64"  => "arm",
 "armv7l"  => "arm",
 "armv7hl" => "arm",
};
our $sign_project = 0;
our $servicedispatch = 0;

1;
