# The LemonLDAP::NG portal (as Debian's /usr/share/lemonldap-ng/portal/htdocs/index.psgi) plus
# its static files, which a web server would serve, for real browsers. Run by plackup.
use Plack::Builder;
use Plack::App::File;
use Lemonldap::NG::Portal::Main;

my $portal = Lemonldap::NG::Portal::Main->run({});
builder {
    mount "/static" => Plack::App::File->new(
        root => "/usr/share/lemonldap-ng/portal/htdocs/static")->to_app;
    mount "/" => $portal;
};
